"""Bootstrap confidence intervals for leaderboard metrics, and paired comparisons of two models.

Design: resampled row *counts*, streamed. A resample is the vector of how often each
scored row is drawn with replacement (within its class for classification, so every
class keeps its count and AUC is always defined): the same distribution as resampled
row indices, without an ``(n_boot, n)`` array of them. Counts are drawn in blocks of
``BLOCK_CELLS // n`` resamples, regenerated from ``seed`` on every pass and never
stored; each block goes through the metric's weighted form in the registry
(:meth:`automl.metrics.Metric.weighted`), which did its weight-free work (sorting for
AUC, per-row losses) once per model. Memory: ``O(BLOCK_CELLS + n)`` per model and
``O(n_boot)`` per result, whatever the number of rows; time: ``O(n_boot × n)`` in a few
vectorised passes (``bench/bootstrap_cost.py``). Every model of one
:meth:`Bootstrap.samples_of` call sees the same resamples, so a paired difference
compares two models on exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from automl.metrics import Metric

__all__ = ["Bootstrap", "N_BOOT", "BLOCK_CELLS", "percentile_interval"]

N_BOOT = 1000
#: Resample counts generated at once: ``BLOCK_CELLS // n`` resamples of ``n`` rows. 2 MB as float64 stays in
#: cache, which measured twice as fast per cell as 8 MB blocks.
BLOCK_CELLS = 250_000


@dataclass
class Bootstrap:
    """``n_boot`` row resamples of the ``len(y)`` scored rows, stratified by class for classification."""

    y: np.ndarray
    task: str
    n_boot: int = N_BOOT
    seed: int = 0
    #: The scored rows in the order the resample counts use: grouped by class (stable) when classifying.
    rows: np.ndarray = field(init=False, repr=False)
    _strata: list[tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y)
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be at least 1, but got {self.n_boot=}")
        n = len(self.y)
        if self.task == "regression":
            self.rows, self._strata = np.arange(n), [(0, n)]
        else:
            # Grouped by class, each class's counts fill one contiguous range of columns.
            self.rows = np.argsort(self.y, kind="stable")
            starts = np.unique(self.y[self.rows], return_index=True)[1].tolist()
            self._strata = list(zip(starts, [*starts[1:], n], strict=True))

    def blocks(self) -> Iterator[np.ndarray]:
        """The resamples as row counts, block by block: ``(k, n)`` float arrays, ``n_boot`` rows in all.

        Entry ``[b, j]`` is how often row ``rows[j]`` is drawn in resample ``b``. Every pass
        restarts the generator from ``seed`` and draws resample after resample, so the counts
        do not depend on the block size.
        """
        rng = np.random.default_rng(self.seed)
        n = len(self.y)
        size = max(1, min(self.n_boot, BLOCK_CELLS // max(n, 1)))
        for start in range(0, self.n_boot, size):
            k = min(size, self.n_boot - start)
            draws = np.empty((k, n), dtype=np.int64)
            for b in range(k):
                for low, high in self._strata:
                    draws[b, low:high] = rng.integers(low, high, size=high - low)
            # Offsetting resample b's draws by b * n counts the whole block in one bincount.
            draws += n * np.arange(k)[:, None]
            yield np.bincount(draws.ravel(), minlength=k * n).reshape(k, n).astype(np.float64)

    def samples_of(self, metric: Metric, preds: Sequence[np.ndarray]) -> np.ndarray:
        """The metric of each of ``preds`` on every resample: shape ``(len(preds), n_boot)``, one pass."""
        y = self.y[self.rows]
        scores = [metric.weighted(y, np.asarray(pred)[self.rows]) for pred in preds]
        out = np.empty((len(preds), self.n_boot))
        start = 0
        for counts in self.blocks():
            for i, score in enumerate(scores):
                out[i, start:start + len(counts)] = score(counts)
            start += len(counts)
        return out

    def samples(self, metric: Metric, pred: np.ndarray) -> np.ndarray:
        """The metric on every resample: shape ``(n_boot,)``."""
        return self.samples_of(metric, [pred])[0]

    def interval(self, metric: Metric, pred: np.ndarray, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the metric."""
        return percentile_interval(self.samples(metric, pred), level)

    def difference(self, metric: Metric, pred_a: np.ndarray, pred_b: np.ndarray,
                   level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of how much better ``a`` is than ``b`` (positive: ``a`` better)."""
        a, b = self.samples_of(metric, [pred_a, pred_b])
        return percentile_interval(metric.sign() * (a - b), level)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (NaN resamples ignored)."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)
