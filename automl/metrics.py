"""The one metric registry: name → function, direction, tasks, weighted form.

Leaderboard columns, sorting, tie-breaking and search objectives all read it, so a
metric's direction is stated exactly once (H2O sorts F1 the wrong way round,
h2o-3#16623, for want of this). Classification metrics take the class-probability
matrix; regression metrics take predicted values. Definitions follow H2O's.

Every entry is defined once, by its weighted form (a :data:`Scorer`); the plain
``fn`` is that form with every row weighted 1, so the two cannot disagree. Bootstrap
intervals (:mod:`automl.stats`) resample through the weighted form: a resample is a
vector of row counts, and the weight-free work (sorting, per-row losses) is done once
per set of predictions, not once per resample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Metric", "Scorer", "WeightedScore", "DEFAULT_SORT", "LOGLOSS_CLIP", "metrics_for", "score_all", "get"]

#: ``score(w)``: a ``(k, n)`` array of row weights → the ``k`` weighted metric values.
WeightedScore = Callable[[np.ndarray], np.ndarray]
#: ``scorer(y_true, pred)`` → its :data:`WeightedScore`.
Scorer = Callable[[np.ndarray, np.ndarray], WeightedScore]

#: Probabilities are clipped here before the log, as H2O does (scikit-learn clips at the dtype's epsilon).
LOGLOSS_CLIP = 1e-15


@dataclass(frozen=True)
class Metric:
    """A leaderboard metric. ``fn(y_true, pred)``; ``higher_is_better`` sets sort order.

    ``scorer`` is the weighted form (see :data:`Scorer`); registry entries derive ``fn``
    from it. A metric given only ``fn`` is weighted by repeating rows, one weight vector
    at a time, which needs integer weights.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    tasks: tuple[str, ...]
    scorer: Scorer | None = None

    def sign(self) -> float:
        """+1 if higher is better, else -1: multiply to get a "larger is better" score."""
        return 1.0 if self.higher_is_better else -1.0

    def weighted(self, y: np.ndarray, pred: np.ndarray) -> WeightedScore:
        """The metric of ``pred`` as a function of ``(k, n)`` row weights."""
        if self.scorer is not None:
            return self.scorer(y, pred)
        return _by_repeating_rows(self.fn, y, pred)


def _by_repeating_rows(fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray,
                       pred: np.ndarray) -> WeightedScore:
    def score(w: np.ndarray) -> np.ndarray:
        counts = np.asarray(w).astype(np.int64)
        if not np.array_equal(counts, w):
            raise ValueError("a metric without a scorer takes integer row weights only (row counts)")
        rows = (np.repeat(np.arange(len(y)), c) for c in counts)
        return np.array([fn(y[r], pred[r]) for r in rows])

    return score


def _unweighted(scorer: Scorer) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, pred: float(scorer(y, pred)(np.ones((1, len(y))))[0])


def _metric(name: str, scorer: Scorer, higher_is_better: bool, tasks: tuple[str, ...]) -> Metric:
    return Metric(name, _unweighted(scorer), higher_is_better, tasks, scorer)


def _row_mean(loss: Callable[[np.ndarray, np.ndarray], np.ndarray],
              finish: Callable[[np.ndarray], np.ndarray] | None = None) -> Scorer:
    """The weighted mean of a per-row ``loss``, then ``finish`` (a square root for RMSE).

    A NaN row loss (a value outside the metric's domain) makes the metric NaN wherever
    that row carries weight, as H2O leaves such a metric undefined.
    """
    def scorer(y: np.ndarray, pred: np.ndarray) -> WeightedScore:
        per_row = np.asarray(loss(np.asarray(y), np.asarray(pred)), dtype=np.float64)
        undefined = np.isnan(per_row)
        per_row = np.where(undefined, 0.0, per_row)

        def score(w: np.ndarray) -> np.ndarray:
            mean = (w @ per_row) / w.sum(axis=1)
            if undefined.any():
                mean[w[:, undefined].sum(axis=1) > 0] = np.nan
            return mean if finish is None else finish(mean)

        return score

    return scorer


def _p_true(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    return proba[np.arange(len(y)), y]


def _logloss(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(_p_true(y, proba), LOGLOSS_CLIP, 1.0))


def _class_squared_error(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    # H2O's classification MSE: the squared error of the probability given to the true class.
    return (1.0 - _p_true(y, proba)) ** 2


def _squared_error(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return (pred - y) ** 2


def _squared_log_error(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    # NaN at or below -1, where H2O leaves RMSLE undefined. Not skm.mean_squared_log_error:
    # older releases reject values in (-1, 0) (scikit-learn#29678).
    valid = (y > -1) & (pred > -1)
    return np.where(valid, (np.log1p(np.where(valid, pred, 0.0)) - np.log1p(np.where(valid, y, 0.0))) ** 2, np.nan)


class _Ranked:
    """Binary scores sorted once per class, and where each positive's score falls in both classes.

    Cumulative class weights in that order give, for any row weights, the weight of each
    class below (or tied with) every positive: the basis of AUC and average precision.
    """

    def __init__(self, y: np.ndarray, proba: np.ndarray) -> None:
        score = np.asarray(proba)[:, 1]
        positive = np.asarray(y) == 1
        self.pos, self.neg = (rows[np.argsort(score[rows], kind="stable")]
                              for rows in (np.flatnonzero(positive), np.flatnonzero(~positive)))
        pos_scores, neg_scores = score[self.pos], score[self.neg]
        # Per positive (ascending): how many negatives lie below its score, and below or at it;
        # how many positives lie below it.
        self.neg_below = np.searchsorted(neg_scores, pos_scores, side="left")
        self.neg_at_most = np.searchsorted(neg_scores, pos_scores, side="right")
        self.pos_below = np.searchsorted(pos_scores, pos_scores, side="left")

    @staticmethod
    def cumulative(w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Running weight of ``rows`` in their order, from 0: ``(k, len(rows) + 1)``."""
        out = np.zeros((len(w), len(rows) + 1))
        np.cumsum(np.take(w, rows, axis=1), axis=1, out=out[:, 1:])
        return out


def _auc(y: np.ndarray, proba: np.ndarray) -> WeightedScore:
    # Mann-Whitney form of the ROC AUC with ties counted half: each positive beats the negative
    # weight below its score and half the negative weight at its score. The same value as
    # roc_auc_score, without its input checks, which cost more than the maths per epoch.
    ranked = _Ranked(y, proba)
    if not len(ranked.pos) or not len(ranked.neg):
        raise ValueError("AUC needs both classes among the scored rows")
    ties = not np.array_equal(ranked.neg_below, ranked.neg_at_most)

    def score(w: np.ndarray) -> np.ndarray:
        neg = ranked.cumulative(w, ranked.neg)
        beaten = np.take(neg, ranked.neg_below, axis=1)
        if ties:
            beaten = (beaten + np.take(neg, ranked.neg_at_most, axis=1)) / 2
        pos = np.take(w, ranked.pos, axis=1)
        return np.einsum("kp,kp->k", pos, beaten) / (pos.sum(axis=1) * neg[:, -1])

    return score


def _aucpr(y: np.ndarray, proba: np.ndarray) -> WeightedScore:
    # Average precision as scikit-learn defines it: each positive's weight times the precision
    # among the rows scored at or above it (its threshold), over the positive weight; 0 without positives.
    ranked = _Ranked(y, proba)

    def score(w: np.ndarray) -> np.ndarray:
        pos, neg = ranked.cumulative(w, ranked.pos), ranked.cumulative(w, ranked.neg)
        true_at_or_above = pos[:, -1:] - np.take(pos, ranked.pos_below, axis=1)
        false_at_or_above = neg[:, -1:] - np.take(neg, ranked.neg_below, axis=1)
        taken = true_at_or_above + false_at_or_above
        precision = np.divide(true_at_or_above, taken, out=np.zeros_like(taken), where=taken > 0)
        gained = np.einsum("kp,kp->k", np.diff(pos, axis=1), precision)
        return np.divide(gained, pos[:, -1], out=np.zeros_like(gained), where=pos[:, -1] > 0)

    return score


def _mean_per_class_error(y: np.ndarray, proba: np.ndarray) -> WeightedScore:
    # Mean over the classes present (with weight) of each class's error rate at the arg-max decision.
    y = np.asarray(y)
    by_class = np.argsort(y, kind="stable")
    starts = np.unique(y[by_class], return_index=True)[1]
    wrong = (np.asarray(proba).argmax(axis=1) != y)[by_class]

    def score(w: np.ndarray) -> np.ndarray:
        grouped = np.take(w, by_class, axis=1)
        total = np.add.reduceat(grouped, starts, axis=1)
        errors = np.add.reduceat(grouped * wrong, starts, axis=1)
        present = total > 0
        rates = np.divide(errors, total, out=np.zeros_like(total), where=present)
        return rates.sum(axis=1) / present.sum(axis=1)

    return score


_ALL_CLS = ("binary", "multiclass", "image")

# Leaderboard column order per task is the order here. ``rmse``/``mse`` are defined
# differently for classification and regression, hence two entries each.
_REGISTRY: tuple[Metric, ...] = (
    _metric("auc", _auc, True, ("binary",)),
    _metric("accuracy", _row_mean(lambda y, p: p.argmax(axis=1) == y), True, ("image",)),
    _metric("mean_per_class_error", _mean_per_class_error, False, ("multiclass", "image")),
    _metric("logloss", _row_mean(_logloss), False, _ALL_CLS),
    _metric("aucpr", _aucpr, True, ("binary",)),
    _metric("mean_per_class_error", _mean_per_class_error, False, ("binary",)),
    _metric("rmse", _row_mean(_class_squared_error, np.sqrt), False, _ALL_CLS),
    _metric("mse", _row_mean(_class_squared_error), False, _ALL_CLS),
    _metric("rmse", _row_mean(_squared_error, np.sqrt), False, ("regression",)),
    _metric("mse", _row_mean(_squared_error), False, ("regression",)),
    _metric("mae", _row_mean(lambda y, p: np.abs(p - y)), False, ("regression",)),
    _metric("rmsle", _row_mean(_squared_log_error, np.sqrt), False, ("regression",)),
    # For the Gaussian family H2O's mean residual deviance equals the MSE.
    _metric("mean_residual_deviance", _row_mean(_squared_error), False, ("regression",)),
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
