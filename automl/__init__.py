"""automl: Keras architecture search and reference models, ranked on one leaderboard.

Importing this package is cheap: TensorFlow loads only when a network trains.
"""

from __future__ import annotations

import os
from typing import Any

# Quiet TensorFlow's C++ start-up chatter before anything can import it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# OpenMP threads (LightGBM, scikit-learn) that busy-wait starve the search's worker processes running beside
# them: measured 44 s against 4.9 s for one LightGBM fit at 8k rows on 2 busy cores. Must be set before the
# OpenMP runtime loads, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["AutoML", "load_model", "InputError"]

from automl.errors import InputError  # noqa: E402
from automl.version import __version__ as __version__  # noqa: E402


def __getattr__(name: str) -> Any:
    # Lazy: keeps `import automl` and `python -m automl.run --help` light.
    if name == "AutoML":
        from automl.pipeline import AutoML

        return AutoML
    if name == "load_model":
        from automl.export import load_model

        return load_model
    raise AttributeError(f"module 'automl' has no attribute {name!r}")
