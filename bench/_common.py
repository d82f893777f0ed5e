"""What every in-process benchmark does first: find the package, quiet TensorFlow, log to stderr."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

try:
    importlib.metadata.distribution("automl")
except importlib.metadata.PackageNotFoundError:
    sys.path.insert(0, str(ROOT))  # run from a checkout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def log(message: str) -> None:
    """Progress for people; stdout carries only the JSON line."""
    print(message, file=sys.stderr, flush=True)
