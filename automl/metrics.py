"""The one metric registry: name → function, direction, tasks.

Leaderboard columns, sorting, tie-breaking and search objectives all read it, so a
metric's direction is stated exactly once (H2O sorts F1 the wrong way round,
h2o-3#16623, for want of this). Classification metrics take the class-probability
matrix; regression metrics take predicted values. Definitions follow H2O's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

__all__ = ["Metric", "DEFAULT_SORT", "metrics_for", "score_all", "get"]


@dataclass(frozen=True)
class Metric:
    """A leaderboard metric. ``fn(y_true, pred)``; ``higher_is_better`` sets sort order."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    tasks: tuple[str, ...]

    def sign(self) -> float:
        """+1 if higher is better, else -1: multiply to get a "larger is better" score."""
        return 1.0 if self.higher_is_better else -1.0


def _p_true(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    return proba[np.arange(len(y)), y]


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    # Mann-Whitney form of the ROC AUC (ties count half): the same value as roc_auc_score,
    # without its input checks, which cost more than the maths in per-epoch validation.
    ranks = rankdata(proba[:, 1])
    positives = np.asarray(y) == 1
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes among the scored rows")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _aucpr(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.average_precision_score(y, proba[:, 1]))


def _logloss(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.log_loss(y, proba, labels=np.arange(proba.shape[1])))


def _mean_per_class_error(y: np.ndarray, proba: np.ndarray) -> float:
    # Mean over the classes present of each class's error rate at the arg-max decision.
    return float(1.0 - skm.balanced_accuracy_score(y, proba.argmax(axis=1)))


def _accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.accuracy_score(y, proba.argmax(axis=1)))


def _class_mse(y: np.ndarray, proba: np.ndarray) -> float:
    # H2O's classification MSE: the squared error of the probability given to the true class.
    return float(np.mean((1.0 - _p_true(y, proba)) ** 2))


def _rmsle(y: np.ndarray, pred: np.ndarray) -> float:
    if np.any(y <= -1) or np.any(pred <= -1):
        return float("nan")  # undefined, as in H2O
    # Not skm.mean_squared_log_error: older releases reject values in (-1, 0) (scikit-learn#29678).
    return float(np.sqrt(np.mean((np.log1p(pred) - np.log1p(y)) ** 2)))


_ALL_CLS = ("binary", "multiclass", "image")


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(skm.mean_squared_error(y, pred)))


# Leaderboard column order per task is the order here. ``rmse``/``mse`` are defined
# differently for classification and regression, hence two entries each.
_REGISTRY: tuple[Metric, ...] = (
    Metric("auc", _auc, True, ("binary",)),
    Metric("accuracy", _accuracy, True, ("image",)),
    Metric("mean_per_class_error", _mean_per_class_error, False, ("multiclass", "image")),
    Metric("logloss", _logloss, False, _ALL_CLS),
    Metric("aucpr", _aucpr, True, ("binary",)),
    Metric("mean_per_class_error", _mean_per_class_error, False, ("binary",)),
    Metric("rmse", lambda y, p: float(np.sqrt(_class_mse(y, p))), False, _ALL_CLS),
    Metric("mse", _class_mse, False, _ALL_CLS),
    Metric("rmse", _rmse, False, ("regression",)),
    Metric("mse", lambda y, p: float(skm.mean_squared_error(y, p)), False, ("regression",)),
    Metric("mae", lambda y, p: float(skm.mean_absolute_error(y, p)), False, ("regression",)),
    Metric("rmsle", _rmsle, False, ("regression",)),
    # For the Gaussian family H2O's mean residual deviance equals the MSE.
    Metric("mean_residual_deviance", lambda y, p: float(skm.mean_squared_error(y, p)), False, ("regression",)),
)

DEFAULT_SORT = {"binary": "auc", "multiclass": "mean_per_class_error", "image": "mean_per_class_error",
                "regression": "mean_residual_deviance"}


def metrics_for(task: str) -> list[Metric]:
    """The leaderboard metrics of ``task``, in column order."""
    return [m for m in _REGISTRY if task in m.tasks]


def get(name: str, task: str) -> Metric:
    """The metric ``name`` as defined for ``task``; ``ValueError`` names the valid ones."""
    for m in metrics_for(task):
        if m.name == name:
            return m
    valid = ", ".join(m.name for m in metrics_for(task))
    raise ValueError(f"metric {name!r} does not apply to {task} tasks; use one of {valid}")


def score_all(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every leaderboard metric of ``task`` for one set of predictions."""
    return {m.name: m.fn(y, pred) for m in metrics_for(task)}
