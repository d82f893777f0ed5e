"""One trial trained alone: the objective of ``study.optimize``, and the trainer of a round's single trials."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna

from automl.budget import model_deadline
from automl.engines.base import SearchData, SearchJob
from automl.engines.optuna_engine.claims import Claims
from automl.engines.optuna_engine.ledger import Attr
from automl.engines.trainers import train_trial
from automl.errors import FailedTrialError
from automl.spaces import suggest

__all__ = ["objective", "train_alone"]


def objective(job: SearchJob, data: SearchData, deadline: float, claims: Claims) -> Callable[[optuna.Trial], float]:
    """``study.optimize``'s objective: tag, check and train one trial."""

    def run(trial: optuna.Trial) -> float:
        claims.tag(trial)
        params = suggest(job.space, trial)
        why = claims.skip(trial, params)
        if why is not None:
            if why == Attr.SURPLUS:
                trial.study.stop()
            raise optuna.TrialPruned()
        return train_alone(trial, params, job, data, deadline, claims)

    return run


def train_alone(trial: optuna.Trial, params: dict[str, Any], job: SearchJob, data: SearchData, deadline: float,
                claims: Claims) -> float:
    """Train one trial with the one-at-a-time trainer; raises ``TrialPruned`` or :class:`FailedTrialError`."""

    def report(value: float, epoch: int) -> None:
        claims.guard()
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    deadline = model_deadline(deadline, job.config.search.max_runtime_secs_per_model)
    started = time.monotonic()
    try:
        value, best_epoch = train_trial(params, data, job.metric, job.config.seed + trial.number, report, deadline,
                                        job.max_epochs, name=f"trial_{trial.number}")
    except optuna.TrialPruned:
        raise
    except Exception as exc:  # any failure of one trial is recorded; the search goes on
        trial.set_user_attr(Attr.ERROR, f"{type(exc).__name__}: {exc}")
        raise FailedTrialError(str(exc)) from exc
    finally:
        # Its own training time: a round's trial trained alone was asked with the round, and waited for the others.
        trial.set_user_attr(Attr.TRAIN_SECONDS, round(time.monotonic() - started, 3))
    trial.set_user_attr(Attr.BEST_EPOCH, best_epoch)
    return value
