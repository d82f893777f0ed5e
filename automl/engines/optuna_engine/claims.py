"""What every trial of this process does before it trains: carry its worker's name, and not train when it repeats
another trial or would exceed ``--max-models``."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from automl.engines.base import SearchJob
from automl.engines.optuna_engine.ledger import Attr, Ledger, claiming

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["Claims", "duplicate_of"]


class Claims:
    """This process's claims on the study: its name on its trials, and the checks a trial passes to train."""

    def __init__(self, job: SearchJob, orphan_check: bool, label: str | None) -> None:
        self.owner, self.label = f"{socket.gethostname()}:{os.getpid()}", label or ""
        self.parent, self.orphan_check = os.getppid(), orphan_check
        self.max_trials = job.config.search.max_models

    def tag(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(Attr.WORKER, self.owner)
        trial.set_user_attr(Attr.LABEL, self.label)  # a retried trial carries its first worker's attributes

    def skip(self, trial: optuna.Trial, params: dict[str, Any], known: list[FrozenTrial] | None = None) -> Attr | None:
        """Why ``trial`` must not train (:attr:`Attr.DUPLICATE_OF` or :attr:`Attr.SURPLUS`, tagged on it), or None
        to train it. ``known``: the study's claiming trials, when the caller keeps them (a round asks many trials
        at once)."""
        known = claiming(trial.study) if known is None else known
        ledger = Ledger(known)
        same = duplicate_of(trial.number, params, ledger)
        if same is not None:  # constant-liar TPE makes this rare; a repeat would only cost time
            trial.set_user_attr(Attr.DUPLICATE_OF, same)
            return Attr.DUPLICATE_OF
        # Parallel workers must not overshoot --max-models: the first max_trials trials by number run.
        if self.max_trials is not None and len([t for t in ledger.counted() if t.number < trial.number]) \
                >= self.max_trials:
            trial.set_user_attr(Attr.SURPLUS, True)
            return Attr.SURPLUS
        return None

    def guard(self) -> None:
        """Exit if the supervisor died (kill -9): do not run orphaned."""
        if self.orphan_check and os.getppid() != self.parent:
            raise SystemExit(1)


def duplicate_of(number: int, params: dict[str, Any], ledger: Ledger) -> int | None:
    """The number of an earlier counted trial (running or finished) with exactly these parameters."""
    for other in ledger.counted():
        if other.number < number and other.params == params:
            return other.number
    return None
