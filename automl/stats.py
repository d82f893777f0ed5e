"""Bootstrap confidence intervals for leaderboard metrics, and paired comparisons of two models.

Resampling rows with replacement, the same resamples for every model of a board, so a
paired difference is the difference of two models on exactly the same rows. Metrics
that are means of per-row losses, and AUC (through ranks), are computed for all
resamples at once; the others fall back to one call per resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from automl.metrics import Metric

__all__ = ["Bootstrap", "N_BOOT"]

N_BOOT = 1000
_EPS = 1e-15


@dataclass
class Bootstrap:
    """``n_boot`` row resamples of ``n`` rows, stratified by class for classification."""

    y: np.ndarray
    task: str
    n_boot: int = N_BOOT
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        n = len(self.y)
        if self.task == "regression":
            self.idx = rng.integers(0, n, size=(self.n_boot, n))
        else:
            # Stratified resamples keep every class present, so AUC is always defined.
            parts = [rng.choice(np.flatnonzero(self.y == c), size=(self.n_boot, int((self.y == c).sum())))
                     for c in np.unique(self.y)]
            self.idx = np.concatenate(parts, axis=1)

    def samples(self, metric: Metric, pred: np.ndarray) -> np.ndarray:
        """The metric on every resample: shape ``(n_boot,)``."""
        y_b = self.y[self.idx]
        p_b = pred[self.idx]
        fast = _batched(metric.name, self.task, y_b, p_b)
        if fast is not None:
            return fast
        return np.array([metric.fn(y_b[i], p_b[i]) for i in range(self.n_boot)])

    def interval(self, metric: Metric, pred: np.ndarray, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the metric."""
        tail = 100 * (1 - level) / 2
        low, high = np.nanpercentile(self.samples(metric, pred), [tail, 100 - tail])
        return float(low), float(high)

    def difference(self, metric: Metric, pred_a: np.ndarray, pred_b: np.ndarray,
                   level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of how much better ``a`` is than ``b`` (positive: ``a`` better)."""
        diff = metric.sign() * (self.samples(metric, pred_a) - self.samples(metric, pred_b))
        tail = 100 * (1 - level) / 2
        low, high = np.nanpercentile(diff, [tail, 100 - tail])
        return float(low), float(high)


def _batched(name: str, task: str, y: np.ndarray, p: np.ndarray) -> np.ndarray | None:
    """Vectorised metric over resamples (rows of ``y``), or None if not available."""
    if task == "regression":
        err = p - y
        per_row = {"mse": err**2, "mean_residual_deviance": err**2, "rmse": err**2, "mae": np.abs(err)}.get(name)
        if per_row is None:
            return None
        mean = per_row.mean(axis=1)
        return np.sqrt(mean) if name == "rmse" else mean
    if name == "auc":
        ranks = rankdata(p[..., 1], axis=1)
        n1 = y.sum(axis=1)
        n0 = y.shape[1] - n1
        return (np.where(y == 1, ranks, 0.0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    p_true = np.take_along_axis(p, y[..., None], axis=2)[..., 0]
    if name == "logloss":
        return -np.log(np.clip(p_true, _EPS, 1.0)).mean(axis=1)
    if name in ("mse", "rmse"):
        mean = ((1.0 - p_true) ** 2).mean(axis=1)
        return np.sqrt(mean) if name == "rmse" else mean
    if name == "accuracy":
        return (p.argmax(axis=2) == y).mean(axis=1)
    if name == "mean_per_class_error":
        wrong = p.argmax(axis=2) != y
        # Stratified resamples keep every class, so each class's error rate is defined.
        return np.mean([(wrong & (y == c)).sum(axis=1) / (y == c).sum(axis=1) for c in np.unique(y)], axis=0)
    return None
