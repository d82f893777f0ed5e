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
    #: Where each trial writes TensorBoard logs (``<log_dir>/trial_<n>``), or None.
    log_dir: str | None = None


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
                max_epochs: int, name: str = "trial") -> tuple[float, int]:
    """Train one network on the search split; return (validation metric, best epoch).

    ``report(value, epoch)`` gets the validation metric after each chunk of epochs;
    with ``data.log_dir`` the same values go to TensorBoard under ``<log_dir>/<name>``.
    """
    import keras

    from automl.training import KerasNetwork

    net = KerasNetwork(params, data.task, epochs=max_epochs, seed=seed, n_classes=data.n_classes, family=data.family)
    sign = metric.sign()
    writer = _tensorboard_writer(data.log_dir, name, params)

    def on_chunk(score: float, epoch: int) -> None:
        if writer is not None:
            import tensorflow as tf

            with writer.as_default():
                tf.summary.scalar(f"validation_{metric.name}", sign * score, step=epoch)
        if report is not None:
            report(sign * score, epoch)

    try:
        net.fit(data.x_train, data.y_train, data.x_val, monitor=lambda pred: sign * metric.fn(data.y_val, pred),
                report=on_chunk, deadline=deadline)
        value = metric.fn(data.y_val, net.predict_proba(data.x_val))
    finally:
        if writer is not None:
            writer.close()
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


def _tensorboard_writer(log_dir: str | None, name: str, params: dict[str, Any]) -> Any:
    """A TensorBoard writer for one trial, its hyperparameters written as text; None without ``log_dir``."""
    if log_dir is None:
        return None
    import json

    import tensorflow as tf

    writer = tf.summary.create_file_writer(f"{log_dir}/{name}")
    with writer.as_default():
        tf.summary.text("hyperparameters", json.dumps(params, sort_keys=True, default=str), step=0)
    return writer
