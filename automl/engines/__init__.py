"""Search engines: they sample configurations from a space and train trials under the budget.

Each engine module exposes ``search(...) -> list[TrialRecord]`` with the signature of
:func:`automl.engines.optuna_engine.search`. What a trial is (train a network on the
search split, score the validation rows) is defined once here, for every engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI reads ENGINES for --help: keep this import free of numpy and scikit-learn
    import numpy as np

    from automl.metrics import Metric

__all__ = ["SearchData", "TrialRecord", "train_trial", "ENGINES", "get_engine"]

ENGINES = ("optuna", "keras-tuner")


@dataclass
class SearchData:
    """The preprocessed search split: fit on ``x_train``, score on ``x_val``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str
    n_classes: int
    family: str = "mlp"


@dataclass
class TrialRecord:
    """One search trial as ``trials.csv`` shows it."""

    number: int
    state: str
    value: float
    best_epoch: int
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def train_trial(params: dict[str, Any], data: SearchData, metric: Metric, seed: int,
                report: Callable[[float, int], None] | None, deadline: float | None,
                max_epochs: int) -> tuple[float, int]:
    """Train one network on the search split; return (validation metric, best epoch)."""
    import keras

    from automl.training import KerasNetwork

    net = KerasNetwork(params, data.task, epochs=max_epochs, seed=seed, n_classes=data.n_classes, family=data.family)
    sign = metric.sign()
    try:
        net.fit(data.x_train, data.y_train, data.x_val,
                monitor=lambda pred: sign * metric.fn(data.y_val, pred),
                report=None if report is None else (lambda score, epoch: report(sign * score, epoch)),
                deadline=deadline)
        value = metric.fn(data.y_val, net.predict_proba(data.x_val))
    finally:
        # free_memory=False skips a gc.collect() that costs up to 0.6 s a trial (TOOLCHAIN.md).
        keras.backend.clear_session(free_memory=False)
    if not math.isfinite(value):
        raise ValueError(f"validation {metric.name} is {value}")
    return value, net.best_epoch_


def get_engine(name: str) -> Any:
    """The engine module called ``name``."""
    if name == "optuna":
        from automl.engines import optuna_engine

        return optuna_engine
    if name == "keras-tuner":
        from automl.engines import keras_tuner_engine

        return keras_tuner_engine
    raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
