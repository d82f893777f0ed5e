"""The run's event log: every stage's messages, kept for ``event_log.csv`` and echoed as progress."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from automl.io import write_csv

__all__ = ["EventLog"]

_logger = logging.getLogger("automl")


@dataclass
class EventLog:
    """Collects ``(timestamp, level, stage, message)`` rows; prints them when ``verbose``."""

    verbose: bool = True
    rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, stage: str, message: str, level: str = "INFO") -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.rows.append({"timestamp": stamp, "level": level, "stage": stage, "message": message})
        _logger.log(getattr(logging, level, logging.INFO), "[%s] %s", stage, message)
        if self.verbose:
            print(f"[{stage}] {message}", file=sys.stderr, flush=True)

    def warn(self, stage: str, message: str) -> None:
        self.add(stage, message, "WARNING")

    def write(self, path: Path) -> None:
        write_csv(pd.DataFrame(self.rows, columns=["timestamp", "level", "stage", "message"]), path)
