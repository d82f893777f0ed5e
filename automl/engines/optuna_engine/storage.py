"""The one adapter to Optuna's storages: opening them, and the few things Optuna has no public call for (a
trial's heartbeat outside ``optimize``, failing another process's trial, a trial's retry history while it runs).
No other module touches ``study._storage``, ``trial._trial_id`` or ``system_attrs``."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.engines.optuna_engine.policy import DEFAULT_POLICY, HEARTBEAT_SECONDS, WorkerPolicy
from automl.errors import InputError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = ["open_storage", "fail_stale", "fail_for_retry", "snapshot", "retried_numbers", "retries",
           "Beats"]


def open_storage(storage_url: str | None, storage_dir: Path, policy: WorkerPolicy = DEFAULT_POLICY) -> BaseStorage:
    """A journal file in ``storage_dir`` (no server, safe for local processes), or the RDB storage at
    ``storage_url`` with heartbeats, whose missing ones fail a trial and queue it again."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if storage_url is None:
        storage_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(storage_dir / "study.journal")))
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8: not the user's concern
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=int(policy.grace_seconds),
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                              engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # a wrong URL, no server, no driver: the user must fix the URL
        raise InputError(f"--storage {storage_url}: cannot open ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                         "check the URL and that the database server runs") from None


def fail_stale(study: optuna.Study) -> None:
    """Fail (and queue again) trials whose heartbeats stopped: what ``optimize`` does before each trial."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():  # "experimental" since Optuna 2.9, as the heartbeats themselves
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_for_retry(study: optuna.Study, trial: FrozenTrial, attrs: dict[str, Any]) -> None:
    """Set ``attrs`` on another process's RUNNING trial and fail it (Optuna has no public call for this);
    raises ``UpdateFinishedTrialError`` if it ended meanwhile."""
    from optuna.trial import TrialState

    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def snapshot(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """A trial of this process as the storage holds it now (with its retry history, which a ``Trial`` hides): a
    copy, which its later tell does not change."""
    return copy.deepcopy(study._storage.get_trial(trial._trial_id))


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that Optuna's heartbeat callback failed and queued again (each retry's history)."""
    from optuna.storages import RetryFailedTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 3.0
        return {number for t in trials for number in RetryFailedTrialCallback.retry_history(t)}


def retries(trials: list[FrozenTrial]) -> dict[int, int]:
    """Each retried trial's number -> the number of the trial that retries it."""
    from optuna.storages import RetryFailedTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 2.8
        first = {t.number: RetryFailedTrialCallback.retried_trial_number(t) for t in trials}
    return {failed: number for number, failed in first.items() if failed is not None}


class Beats:
    """Heartbeats for trials this process asked outside ``optimize`` (RDB storage; a journal has none)."""

    def __init__(self, study: optuna.Study) -> None:
        storage = study._storage
        self.storage = storage
        self.interval: int | None = storage.get_heartbeat_interval() if hasattr(storage,
                                                                                "get_heartbeat_interval") else None
        self.ids: list[int] = []

    def add(self, trial: optuna.Trial) -> None:
        """Beat for ``trial`` from now on (its first heartbeat at once)."""
        if self.interval:
            self.storage.record_heartbeat(trial._trial_id)
            self.ids.append(trial._trial_id)

    def beat(self) -> None:
        for trial_id in list(self.ids):  # the round adds trials while the beating thread runs
            self.storage.record_heartbeat(trial_id)
