"""Bootstrap intervals: the same values as the old index-based bootstrap, bounded memory, paired differences."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from automl import stats
from automl.metrics import Metric, get
from automl.stats import Bootstrap, percentile_interval


# -- the old implementation (automl/stats.py before bounded memory), kept as the reference ------------------------
def _old_indices(y: np.ndarray, task: str, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` resampled row indices, as the old ``Bootstrap.__post_init__`` drew them."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if task == "regression":
        return rng.integers(0, n, size=(n_boot, n))
    parts = [rng.choice(np.flatnonzero(y == c), size=(n_boot, int((y == c).sum()))) for c in np.unique(y)]
    return np.concatenate(parts, axis=1)


def _old_samples(metric: Metric, task: str, y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The old ``Bootstrap.samples``: its vectorised ``_batched`` forms, else the metric per resample."""
    y, p = y[idx], pred[idx]
    name = metric.name
    if task == "regression":
        err = p - y
        per_row = {"mse": err**2, "mean_residual_deviance": err**2, "rmse": err**2, "mae": np.abs(err)}.get(name)
        if per_row is not None:
            mean = per_row.mean(axis=1)
            return np.sqrt(mean) if name == "rmse" else mean
    elif name == "auc":
        ranks = rankdata(p[..., 1], axis=1)
        n1 = y.sum(axis=1)
        n0 = y.shape[1] - n1
        return (np.where(y == 1, ranks, 0.0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    else:
        p_true = np.take_along_axis(p, y[..., None], axis=2)[..., 0]
        if name == "logloss":
            return -np.log(np.clip(p_true, 1e-15, 1.0)).mean(axis=1)
        if name in ("mse", "rmse"):
            mean = ((1.0 - p_true) ** 2).mean(axis=1)
            return np.sqrt(mean) if name == "rmse" else mean
        if name == "accuracy":
            return (p.argmax(axis=2) == y).mean(axis=1)
        if name == "mean_per_class_error":
            wrong = p.argmax(axis=2) != y
            return np.mean([(wrong & (y == c)).sum(axis=1) / (y == c).sum(axis=1) for c in np.unique(y)], axis=0)
    return np.array([metric.fn(y[i], p[i]) for i in range(len(idx))])
# ------------------------------------------------------------------------------------------------------------------


def _scores(seed: int, n: int = 400, signal: float = 1.0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    if decimals is not None:
        s = np.round(s, decimals)  # many tied scores
    return y, np.column_stack([1 - s, s])


def _multiclass(seed: int, n: int = 300, classes: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    proba = rng.dirichlet(np.ones(classes), n)
    proba[np.arange(n), y] += 0.4
    return y, proba / proba.sum(axis=1, keepdims=True)


def _regression(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return y, y + rng.normal(scale=0.5, size=n)


CASES = [("binary", name, _scores(0, decimals=2)) for name in ("auc", "logloss", "aucpr", "mean_per_class_error",
                                                               "rmse", "mse")] + \
        [("multiclass", name, _multiclass(6)) for name in ("mean_per_class_error", "logloss", "rmse")] + \
        [("image", "accuracy", _multiclass(7))] + \
        [("regression", name, _regression(4)) for name in ("rmse", "mse", "mae", "mean_residual_deviance")]


def _given_counts(y: np.ndarray, task: str, idx: np.ndarray, block: int = 37) -> Bootstrap:
    """A Bootstrap whose resamples are the rows of ``idx``, as counts, in blocks of ``block``."""
    boot = Bootstrap(y, task, n_boot=len(idx))
    counts = np.stack([np.bincount(rows, minlength=len(y)) for rows in idx])[:, boot.rows].astype(float)
    boot.blocks = lambda: (counts[i:i + block] for i in range(0, len(counts), block))  # type: ignore[method-assign]
    return boot


@pytest.mark.parametrize(("task", "name", "data"), CASES, ids=[f"{t}-{m}" for t, m, _ in CASES])
def test_the_same_resamples_give_the_old_bootstrap_values(task, name, data):
    y, pred = data
    metric = get(name, task)
    idx = _old_indices(y, task, 200, seed=3)
    expected = _old_samples(metric, task, y, pred, idx)
    np.testing.assert_allclose(_given_counts(y, task, idx).samples(metric, pred), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("task", "name", "data"), [("binary", "auc", _scores(0)), ("binary", "logloss", _scores(0)),
                                                    ("regression", "mse", _regression(4))])
def test_intervals_agree_with_the_old_bootstrap_within_monte_carlo_error(task, name, data):
    # Different random draws: the 2.5 % and 97.5 % points of 1,000 resamples each move by about
    # 0.1 bootstrap standard deviations; half a standard deviation is a four-sigma tolerance.
    y, pred = data
    metric = get(name, task)
    old = _old_samples(metric, task, y, pred, _old_indices(y, task, 1000, seed=0))
    new = Bootstrap(y, task, seed=0).samples(metric, pred)
    assert np.std(new) == pytest.approx(np.std(old), rel=0.15)
    tolerance = 0.5 * np.std(old)
    for ours, theirs in zip(percentile_interval(new), percentile_interval(old), strict=True):
        assert abs(ours - theirs) < tolerance
    low, high = percentile_interval(new)
    assert low < metric.fn(y, pred) < high


def test_resamples_are_stratified_counts_the_same_on_every_pass():
    y, _ = _scores(1)
    boot = Bootstrap(y, "binary", n_boot=50)
    counts = np.concatenate(list(boot.blocks()))
    assert counts.shape == (50, len(y))
    np.testing.assert_array_equal(counts, np.round(counts))
    in_class = y[boot.rows] == 1
    assert (counts[:, in_class].sum(axis=1) == in_class.sum()).all()
    assert (counts[:, ~in_class].sum(axis=1) == (~in_class).sum()).all()
    np.testing.assert_array_equal(np.concatenate(list(boot.blocks())), counts)
    assert not np.array_equal(np.concatenate(list(Bootstrap(y, "binary", n_boot=50, seed=1).blocks())), counts)


def test_block_size_bounds_memory_only(monkeypatch):
    y, p = _scores(2)
    metric = get("auc", "binary")
    whole = Bootstrap(y, "binary", n_boot=100).samples(metric, p)
    monkeypatch.setattr(stats, "BLOCK_CELLS", 3 * len(y))
    boot = Bootstrap(y, "binary", n_boot=100)
    assert {len(b) for b in boot.blocks()} == {3, 1}
    np.testing.assert_array_equal(boot.samples(metric, p), whole)


def test_memory_stays_bounded_on_200k_rows():
    # The old bootstrap held (n_boot, n) indices and (n_boot, n, 2) copies: 0.4 GB and 0.8 GB here.
    # Memory does not depend on n_boot, so 250 resamples (not 1,000) keep the test quick.
    n = 200_000
    y, p = _scores(3, n=n)
    auc = get("auc", "binary")
    tracemalloc.start()
    try:
        low, high = Bootstrap(y, "binary", n_boot=250).interval(auc, p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    assert low < roc_auc_score(y, p[:, 1]) < high
    assert high - low < 0.01  # 200,000 rows pin AUC down to a few thousandths


def test_a_metric_without_a_scorer_is_resampled_by_repeating_rows():
    y, p = _scores(5, n=120)
    plain = get("auc", "binary")
    custom = Metric("auc", lambda yy, pp: roc_auc_score(yy, pp[:, 1]), True, ("binary",))
    boot = Bootstrap(y, "binary", n_boot=40, seed=9)
    np.testing.assert_allclose(boot.samples(custom, p), boot.samples(plain, p), rtol=1e-12)


def test_difference_is_paired_and_signed_by_direction():
    y, strong = _scores(2, n=600, signal=1.5)
    _, weak = _scores(8, n=600, signal=0.2)
    boot = Bootstrap(y, "binary", n_boot=300)
    for name in ("auc", "logloss"):
        metric = get(name, "binary")
        low, high = boot.difference(metric, strong, weak)
        assert 0 < low < high, name  # positive: the first model is better, whatever the direction
        assert boot.difference(metric, weak, strong) == pytest.approx((-high, -low))
        assert boot.difference(metric, strong, strong) == (0.0, 0.0)


def test_rejects_no_resamples():
    with pytest.raises(ValueError, match="n_boot"):
        Bootstrap(np.array([0, 1]), "binary", n_boot=0)
