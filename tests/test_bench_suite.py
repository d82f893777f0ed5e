"""bench/suite.py: fixed stratified splits, the paired bootstrap interval, and class-column alignment."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import suite  # noqa: E402  (a script folder, not a package)

AUC, LOGLOSS, ACCURACY, RMSE, R2 = (m for metrics in suite.METRICS.values() for m in metrics)


def toy(task: str, n: int = 503) -> suite.Dataset:
    rng = np.random.default_rng(3)
    target = (rng.choice(["a", "b", "c"], size=n, p=[0.7, 0.2, 0.1]) if task != "regression"
              else rng.normal(size=n).round(6).astype(str))
    frame = pd.DataFrame({"x": rng.integers(0, 100, n).astype(str), "y": target})
    return suite.Dataset("toy", "y", task, lambda: frame)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_split_is_made_once_and_the_same_every_time(tmp_path: Path, task: str) -> None:
    dataset = toy(task)
    first = suite.cached_split(tmp_path / "a", dataset)
    again = suite.cached_split(tmp_path / "b", dataset)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    stamps = [p.stat().st_mtime_ns for p in first]
    assert suite.cached_split(tmp_path / "a", dataset) == first
    assert [p.stat().st_mtime_ns for p in first] == stamps  # reused, not rewritten
    train, test = (pd.read_csv(p, dtype=str) for p in first)
    assert (len(train), len(test)) == (402, 101)
    assert sorted(pd.concat([train, test]).itertuples(index=False)) == sorted(dataset.read().itertuples(index=False))


def test_classification_split_keeps_class_shares() -> None:
    dataset = toy("multiclass")
    frame = dataset.read()
    _, test = suite.split(frame, "y", stratify=True)
    shares = frame["y"].value_counts(normalize=True)
    assert np.allclose(test["y"].value_counts(normalize=True)[shares.index], shares, atol=1 / len(test))


def binary_case(n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a model that sees them through noise, and one that sees only noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    good = 1 / (1 + np.exp(-(2.5 * (2 * y - 1) + rng.normal(size=n))))
    bad = rng.random(n)
    return y, np.column_stack([1 - good, good]), np.column_stack([1 - bad, bad])


def test_identical_predictions_give_a_zero_interval() -> None:
    y, good, _ = binary_case()
    assert suite.paired_interval(AUC, y, good, good, resamples=200) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    values = np.linspace(0, 1, 50)
    assert suite.paired_interval(RMSE, values, values + 0.1, values + 0.1, resamples=200)["high"] == 0.0


def test_a_clearly_better_model_is_above_zero_whatever_the_direction() -> None:
    y, good, bad = binary_case()
    better = suite.paired_interval(AUC, y, good, bad, resamples=200)
    assert 0 < better["low"] <= better["diff"] <= better["high"]
    worse = suite.paired_interval(AUC, y, bad, good, resamples=200)
    assert worse["high"] < 0
    rng = np.random.default_rng(1)
    values = rng.normal(size=200)
    close, far = values + rng.normal(0, 0.1, 200), values + rng.normal(0, 1.0, 200)
    assert suite.paired_interval(RMSE, values, close, far, resamples=200)["low"] > 0  # lower RMSE is better


def test_chunks_do_not_change_the_resamples() -> None:
    y, good, bad = binary_case(97)
    whole = suite.paired_interval(LOGLOSS, y, good, bad, resamples=120, chunk=120)
    assert suite.paired_interval(LOGLOSS, y, good, bad, resamples=120, chunk=7) == whole
    assert suite.paired_interval(ACCURACY, y, good, bad, resamples=120, chunk=1) == \
        suite.paired_interval(ACCURACY, y, good, bad, resamples=120, chunk=500)


def test_one_class_resamples_are_skipped() -> None:
    y = np.array([0] * 9 + [1])  # about a third of the resamples draw no positive
    proba = np.column_stack([np.zeros(10), np.linspace(0, 1, 10)])
    assert np.isnan(AUC.fn(np.zeros(4, dtype=int), proba[:4]))
    assert suite.paired_interval(AUC, y, proba, proba[::-1], resamples=100) == {"diff": 1.0, "low": 1.0, "high": 1.0}


def test_probability_columns_follow_the_class_order() -> None:
    preds = pd.DataFrame({"predict": ["yes", "no"], "p_yes": [0.8, 0.3], "p_no": [0.2, 0.69]})
    proba = suite.probabilities(preds, ["no", "yes"])
    assert np.allclose(proba, [[0.2, 0.8], [0.69 / 0.99, 0.3 / 0.99]])  # rows rescaled to sum to 1
    with pytest.raises(ValueError, match="p_maybe"):
        suite.probabilities(preds, ["maybe", "no", "yes"])
    assert suite.encode(pd.Series(["yes", "no", "yes"]), ["no", "yes"]).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="maybe"):
        suite.encode(pd.Series(["maybe"]), ["no", "yes"])


def test_h2o_columns_are_renamed_by_the_target_levels() -> None:
    assert suite.h2o_columns(["predict", "p0", "p1"], ["0", "1"]) == ["predict", "p_0", "p_1"]
    assert suite.h2o_columns(["predict", "no", "yes"], ["no", "yes"]) == ["predict", "p_no", "p_yes"]
    for names in (["predict", "yes", "no"], ["predict", "no"], ["no", "yes", "predict"]):
        with pytest.raises(ValueError, match="levels"):
            suite.h2o_columns(names, ["no", "yes"])
