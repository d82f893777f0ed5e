"""Trials whose process died: heartbeats that keep a live round's trials alive, and the retry of the dead ones
(failed, their configuration queued again), on a journal (no heartbeats: by process id) or an RDB storage."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from automl.engines.optuna_engine.ledger import Attr
from automl.engines.optuna_engine.storage import Beats, fail_for_retry, fail_stale, retried_numbers

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from automl.events import EventLog

__all__ = ["Heartbeats", "owner_gone", "retry_interrupted", "lost"]


class Heartbeats:
    """Heartbeats for the trials of a round, from their ask to their tell (RDB storage; Optuna's own thread
    covers one trial of ``optimize``): a worker that dies stops them, and its trials are retried."""

    def __init__(self, study: optuna.Study) -> None:
        self.beats = Beats(study)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def add(self, trial: optuna.Trial) -> None:
        """Beat for ``trial`` from now on (its first heartbeat at once)."""
        self.beats.add(trial)

    def _beat(self) -> None:
        while not self.done.wait(self.beats.interval):
            self.beats.beat()

    def __enter__(self) -> Heartbeats:
        if self.beats.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def owner_gone(trial: FrozenTrial, grace_seconds: float) -> bool:
    """A RUNNING trial whose process is dead: tagged by a process of this host that no longer runs, or never
    tagged and older than the heartbeat grace (its process died between creating and tagging it)."""
    owner = trial.user_attrs.get(Attr.WORKER)
    if owner is None:
        start = trial.datetime_start
        return start is None or (datetime.now() - start).total_seconds() > grace_seconds
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return False  # another machine's process: a journal is not shared across machines, so leave it be
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def retry_interrupted(study: optuna.Study, belongs: Callable[[FrozenTrial], bool], events: EventLog | None) -> None:
    """Fail RUNNING trials whose process is gone (those ``belongs`` picks), and queue their parameters again."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not belongs(trial):
            continue
        try:
            fail_for_retry(study, trial, {Attr.INTERRUPTED: True,
                                          Attr.ERROR: "interrupted: its process was killed; retried"})
        except UpdateFinishedTrialError:  # another worker's heartbeat check failed and retried it meanwhile
            continue
        study.enqueue_trial(trial.params, user_attrs={Attr.RETRY_OF: trial.number})
        if events is not None:
            events.warn("search", f"trial {trial.number} was interrupted; its configuration is queued again")


def lost(study: optuna.Study) -> set[str]:
    """Labels of workers whose last trial was failed for a missing heartbeat (checked now, RDB storage only)."""
    fail_stale(study)
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    last: dict[str, FrozenTrial] = {}
    for t in trials:
        if t.user_attrs.get(Attr.LABEL):
            last[t.user_attrs[Attr.LABEL]] = t
    return {label for label, t in last.items() if t.state.name == "FAIL" and t.number in retried}
