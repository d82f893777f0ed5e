"""Search engines: they sample configurations from a space and train trials under the budget.

Every engine (``optuna_engine``, ``keras_tuner_engine``) implements the :class:`Engine` protocol: ``search(job,
data, budget, events) -> list[TrialRecord]`` and ``param_importances(job)`` (None when it has none), and declares
``SUPPORTS_WORKERS``. What every engine shares is defined once, below them: the job and its records
(:mod:`~automl.engines.base`), what a trial trains (:mod:`~automl.engines.trainers`) and when the search stops
(:mod:`~automl.engines.stop`). No engine imports another, nor this package.
"""

from __future__ import annotations

from automl.config import ENGINES
from automl.engines.base import (
    HYPERBAND_MIN_EPOCHS,
    MAX_CONSECUTIVE_FAILURES,
    Engine,
    RemoteWorkers,
    SearchData,
    SearchJob,
    StopPolicy,
    TrialRecord,
    check_identity,
    progress_line,
)

__all__ = ["SearchData", "SearchJob", "StopPolicy", "TrialRecord", "Engine", "RemoteWorkers", "progress_line",
           "check_identity", "ENGINES", "MAX_CONSECUTIVE_FAILURES", "HYPERBAND_MIN_EPOCHS", "get_engine"]


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (its module, imported now: engines import TensorFlow's neighbours)."""
    if name == "optuna":
        from automl.engines import optuna_engine

        return optuna_engine
    if name == "keras-tuner":
        from automl.engines import keras_tuner_engine

        return keras_tuner_engine
    raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
