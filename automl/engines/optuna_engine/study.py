"""The study: opened with its sampler and pruner, its identity checked on resume, read while workers run it."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from automl.engines.base import HYPERBAND_MIN_EPOCHS, SearchJob, TrialRecord, check_identity
from automl.engines.optuna_engine.ledger import Ledger, StudyAttr, record
from automl.engines.optuna_engine.policy import DEFAULT_POLICY, WorkerPolicy
from automl.engines.optuna_engine.recovery import owner_gone, retry_interrupted
from automl.engines.optuna_engine.storage import open_storage
from automl.errors import InputError
from automl.events import EventLog

__all__ = ["open_study", "open_run_study", "trials", "param_importances", "best_value", "TPE_STARTUP"]

#: Trials TPE draws at random before it models the space.
TPE_STARTUP = 8


def open_study(storage_url: str | None, storage_dir: Path, study_name: str, job: SearchJob | None = None,
               worker: int = 0, policy: WorkerPolicy = DEFAULT_POLICY) -> optuna.Study:
    """Create or load the study (``job=None``: load only, it must exist).

    Worker ``i`` samples with seed ``seed + i`` (distinct proposals, reproducible for a
    given worker count) and, one trial at a time, the constant-liar TPE, which counts
    running trials as proposals already taken. Resuming a study whose identity (task, metric, direction,
    seed, protocol, space version) differs from ``job``'s is refused.
    """
    optuna.logging.set_verbosity(logging.ERROR)  # failed trials are recorded in trials.csv
    storage = open_storage(storage_url, storage_dir, policy)
    seed = (job.config.seed if job is not None else 0) + worker
    max_epochs = job.max_epochs if job is not None else 100
    # The constant liar counts running trials as bad results, so that parallel workers do not propose alike. A
    # population round asks its P trials together: the liar then spreads them over the space, away from the
    # best results, so populations go without it (bench/engines.py on diabetes, mean best validation AUC of 3
    # seeds at 60 s: 0.8278 with it, 0.8347 without; the second pair was measured with lr_schedule and
    # label_smoothing in the space, where one-at-a-time search got 0.8304 against 0.8323 without them;
    # duplicates are still refused by the claims' check). Parallel workers keep it whatever they train: it is
    # what keeps them from proposing alike.
    settings = None if job is None else job.config.search
    liar = settings is None or settings.population == 1 or settings.processes > 1 or settings.fan_out > 0 \
        or bool(settings.storage)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP, constant_liar=liar)
    pruner = optuna.pruners.HyperbandPruner(min_resource=HYPERBAND_MIN_EPOCHS, max_resource=max_epochs,
                                            reduction_factor=3)
    if job is None:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, sampler=sampler,
                                pruner=pruner, direction="maximize" if job.metric.higher_is_better else "minimize")
    _check_identity(study, job)
    return study


def _check_identity(study: optuna.Study, job: SearchJob) -> None:
    """Tag a new study with the job's identity; refuse to mix an existing study with another one."""
    known = study.user_attrs.get(StudyAttr.IDENTITY)
    if known is None and study.trials:  # a study of an older version: what it searched for is unknown
        raise InputError(f"study {study.study_name!r} has trials but no recorded identity; use a new --project "
                         "or --output")
    check_identity(study.study_name, known, job)
    if known is None:
        study.set_user_attr(StudyAttr.IDENTITY, job.identity)


def open_run_study(job: SearchJob, events: EventLog, policy: WorkerPolicy = DEFAULT_POLICY) -> optuna.Study:
    """The run's study, resumed (interrupted trials queued again) or new (warm starts queued)."""
    settings = job.config.search
    study = open_study(settings.storage, job.storage_dir, job.study_name, job, policy=policy)
    if study.trials:
        events.add("search", f"resuming study {job.study_name} with {len(study.trials)} earlier trials")
        if settings.storage is None:
            # A journal has no heartbeats: a trial left RUNNING by a process that is gone is retried.
            retry_interrupted(study, lambda t: owner_gone(t, policy.grace_seconds), events)
    else:
        for params in job.warm_starts:
            study.enqueue_trial(params)
    if job.spec is not None:
        study.set_user_attr(StudyAttr.SPEC, job.spec)
    return study


_READERS: dict[tuple[str, str], optuna.Study] = {}


def trials(job: SearchJob) -> list[TrialRecord]:
    """The study's trials as they stand now, read from its storage while workers run them (the scheduler polls
    this between jobs: one study object per storage is kept, so that a journal is read on from where it was)."""
    storage = job.config.search.storage or str(job.storage_dir / "study.journal")
    key = (storage, job.study_name)
    if key not in _READERS:
        _READERS[key] = open_study(job.config.search.storage, job.storage_dir, job.study_name)
    return [record(t) for t in Ledger(_READERS[key].get_trials(deepcopy=False)).listed()]


def param_importances(job: SearchJob) -> dict[str, float] | None:
    """Optuna's hyperparameter importances (fANOVA) of the study, or None with too few trials."""
    storage_url = job.config.search.storage
    if storage_url is None and not (job.storage_dir / "study.journal").exists():
        return None
    study = open_study(storage_url, job.storage_dir, job.study_name)
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) < 3:
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every completed trial scored the same
        return None


def best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no completed trial yet
        return None
