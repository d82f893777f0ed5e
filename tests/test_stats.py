"""Bootstrap intervals agree with a direct bootstrap; the paired comparison flags real differences."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from automl.leaderboard import add_confidence, build
from automl.metrics import get
from automl.stats import Bootstrap


def _scores(seed: int, n: int = 400, signal: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, np.column_stack([1 - s, s])


@pytest.mark.parametrize("name,direct", [("auc", lambda y, p: roc_auc_score(y, p[:, 1])),
                                         ("logloss", lambda y, p: log_loss(y, p, labels=[0, 1]))])
def test_interval_matches_a_direct_bootstrap(name, direct):
    y, p = _scores(0)
    boot = Bootstrap(y, "binary", n_boot=300, seed=5)
    fast = boot.samples(get(name, "binary"), p)
    slow = np.array([direct(y[i], p[i]) for i in boot.idx])
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
    low, high = boot.interval(get(name, "binary"), p)
    assert (low, high) == pytest.approx(tuple(np.percentile(slow, [2.5, 97.5])))
    assert low < direct(y, p) < high


def test_stratified_resamples_keep_class_counts():
    y, _ = _scores(1)
    boot = Bootstrap(y, "binary", n_boot=50)
    assert (y[boot.idx].sum(axis=1) == y.sum()).all()


def test_indistinguishable_flag_on_constructed_models():
    y, strong = _scores(2, n=600, signal=1.5)
    rng = np.random.default_rng(3)
    # "twin": the strong model with tiny noise, tied with it; "weak": far less signal.
    twin_s = np.clip(strong[:, 1] + rng.normal(scale=1e-3, size=len(y)), 0, 1)
    _, weak = _scores(2, n=600, signal=0.2)
    preds = {"strong": strong, "twin": np.column_stack([1 - twin_s, twin_s]), "weak": weak}
    rows = [{"model_id": k, "algo": "X", "params": {}, "training_time_ms": 1.0, "predict_time_per_row_ms": 0.1,
             "metrics": {m: get(m, "binary").fn(y, p) for m in ("auc", "logloss", "aucpr", "mean_per_class_error",
                                                                  "rmse", "mse")}} for k, p in preds.items()]
    board = add_confidence(build(rows, "binary", "auc"), preds, y, "binary", "auc")
    flags = dict(zip(board["model_id"], board["indistinguishable_from_leader"], strict=True))
    assert not flags["weak"]
    assert flags["twin"] and flags[board["model_id"].iloc[0]]
    assert list(board.columns[:5]) == ["model_id", "auc", "auc_ci_low", "auc_ci_high", "indistinguishable_from_leader"]


def test_regression_interval():
    rng = np.random.default_rng(4)
    y = rng.normal(size=300)
    pred = y + rng.normal(scale=0.5, size=300)
    boot = Bootstrap(y, "regression", n_boot=200)
    low, high = boot.interval(get("mse", "regression"), pred)
    assert low < np.mean((pred - y) ** 2) < high


def test_mean_per_class_error_resamples_match_the_metric():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, 300)
    proba = rng.dirichlet(np.ones(4), 300)
    proba[np.arange(300), y] += 0.4
    proba /= proba.sum(axis=1, keepdims=True)
    boot = Bootstrap(y, "multiclass", n_boot=100, seed=2)
    metric = get("mean_per_class_error", "multiclass")
    np.testing.assert_allclose(boot.samples(metric, proba), [metric.fn(y[i], proba[i]) for i in boot.idx],
                               atol=1e-12)
