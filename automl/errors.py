"""The exceptions that tell callers what to do next.

``InputError``: the user's input is wrong; the CLI prints its one-line message and
exits with code 2. ``FailedTrialError``: this trial failed; record it and go on.
"""

from __future__ import annotations

__all__ = ["AutoMLError", "InputError", "FailedTrialError"]


class AutoMLError(Exception):
    """Base class of every error raised on purpose by ``automl``."""


class InputError(AutoMLError, ValueError):
    """Bad input from the user: the message names the file, column or value and the fix."""


class FailedTrialError(AutoMLError):
    """One trial failed (diverged, raised); the engine records it and continues."""

