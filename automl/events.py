"""The run's event log: every stage's messages, kept for ``event_log.csv`` and echoed as progress.

Listeners (plain callables) see every event as it happens; the Prefect flows use one
to keep a progress artifact current, so the library itself never imports Prefect.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from automl.io import write_csv

__all__ = ["EventLog", "Listener", "StageEvents"]

#: Called with each event row: ``{"timestamp", "level", "stage", "message"}``.
Listener = Callable[[dict[str, str]], None]

_logger = logging.getLogger("automl")
# Without a handler of the application's own, quiet runs stay quiet (no last-resort printing of warnings).
_logger.addHandler(logging.NullHandler())


@dataclass
class EventLog:
    """Collects ``(timestamp, level, stage, message)`` rows; prints them when ``verbose``."""

    verbose: bool = True
    rows: list[dict[str, str]] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list, repr=False, compare=False)
    _open_line: bool = field(default=False, repr=False, compare=False)

    def add(self, stage: str, message: str, level: str = "INFO") -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        row = {"timestamp": stamp, "level": level, "stage": stage, "message": message}
        self.rows.append(row)
        if self.verbose:
            self._print(f"[{stage}] {message}", progress=stage in ("search", "boosting")
                        and message.startswith("trial "))
        else:  # printed or logged, not both: an application's logging (Prefect's, say) would repeat the line
            _logger.log(getattr(logging, level, logging.INFO), "[%s] %s", stage, message)
        for listener in list(self.listeners):
            try:
                listener(dict(row))
            except Exception as exc:  # an observer (a UI, a dashboard) must never sink the training run
                _logger.warning("event listener %r failed: %s: %s", listener, type(exc).__name__, exc)

    def _print(self, line: str, progress: bool) -> None:
        """On a terminal, trial lines overwrite each other (one updating line); elsewhere every line stays."""
        terminal = sys.stderr.isatty()
        if terminal and progress:
            sys.stderr.write(f"\r\x1b[K{line}")
            self._open_line = True
        else:
            sys.stderr.write(("\n" if self._open_line else "") + line + "\n")
            self._open_line = False
        sys.stderr.flush()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every later event (a copy of its row)."""
        self.listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self.listeners:
            self.listeners.remove(listener)

    def warn(self, stage: str, message: str) -> None:
        self.add(stage, message, "WARNING")

    def write(self, path: Path) -> None:
        write_csv(pd.DataFrame(self.rows, columns=["timestamp", "level", "stage", "message"]), path)


@dataclass
class StageEvents:
    """An event log that files the search stage's events under ``stage``: the engines write "search", and the
    GBM search's trials read as "boosting" beside the network search's."""

    log: EventLog
    stage: str

    def add(self, stage: str, message: str, level: str = "INFO") -> None:
        self.log.add(self.stage if stage == "search" else stage, message, level)

    def warn(self, stage: str, message: str) -> None:
        self.add(stage, message, "WARNING")
