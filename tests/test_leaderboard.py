"""The leaderboard: column order, sort direction from the registry, deterministic ties, confidence columns."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from automl.leaderboard import add_confidence, build, columns, sort
from automl.metrics import metrics_for

NAN = float("nan")


def _row(model_id: str, task: str, training_ms: float = 10.0, **metrics: float) -> dict:
    values = {m.name: 0.5 for m in metrics_for(task)}
    values.update(metrics)
    return {"model_id": model_id, "algo": model_id.split("_")[0], "params": {"layers": [8, 4], "lr": 0.01},
            "metrics": values, "training_time_ms": training_ms, "predict_time_per_row_ms": 0.012345678}


@pytest.mark.parametrize(("task", "sort_metric"), [("binary", "auc"), ("binary", "logloss"),
                                                   ("multiclass", "mean_per_class_error"),
                                                   ("regression", "mean_residual_deviance"), ("regression", "mae")])
def test_column_order(task, sort_metric):
    others = [m.name for m in metrics_for(task) if m.name != sort_metric]
    expected = ["model_id", sort_metric, *others, "training_time_ms", "predict_time_per_row_ms", "algo",
                "hyperparameters"]
    assert columns(task, sort_metric) == expected
    board = build([_row("GLM_1", task)], task, sort_metric)
    assert list(board.columns) == expected


def test_binary_columns_spelled_out():
    assert columns("binary", "auc") == ["model_id", "auc", "logloss", "aucpr", "mean_per_class_error", "rmse", "mse",
                                        "training_time_ms", "predict_time_per_row_ms", "algo", "hyperparameters"]


def test_row_contents():
    board = build([_row("MLP_3", "binary", training_ms=1234.5678, auc=0.8)], "binary", "auc")
    row = board.iloc[0]
    assert row["model_id"] == "MLP_3" and row["algo"] == "MLP" and row["auc"] == 0.8
    assert row["training_time_ms"] == 1234.6 and row["predict_time_per_row_ms"] == 0.0123
    assert json.loads(row["hyperparameters"]) == {"layers": [8, 4], "lr": 0.01}
    assert row["hyperparameters"] == json.dumps({"layers": [8, 4], "lr": 0.01}, sort_keys=True)
    for col in columns("binary", "auc")[1:-2]:
        assert pd.api.types.is_float_dtype(board[col]), col


def test_auc_sorts_descending():
    rows = [_row("A_1", "binary", auc=0.7), _row("B_1", "binary", auc=0.9), _row("C_1", "binary", auc=0.8)]
    board = build(rows, "binary", "auc")
    assert list(board["model_id"]) == ["B_1", "C_1", "A_1"]
    assert board["auc"].is_monotonic_decreasing


@pytest.mark.parametrize(("task", "metric"), [("binary", "logloss"), ("regression", "mean_residual_deviance"),
                                              ("multiclass", "mean_per_class_error"), ("regression", "rmsle")])
def test_lower_is_better_sorts_ascending(task, metric):
    rows = [_row("A_1", task, **{metric: 0.7}), _row("B_1", task, **{metric: 0.2}),
            _row("C_1", task, **{metric: 0.4})]
    board = build(rows, task, metric)
    assert list(board["model_id"]) == ["B_1", "C_1", "A_1"]
    assert board[metric].is_monotonic_increasing


def test_ties_broken_by_the_next_metrics_in_their_direction():
    rows = [
        _row("A_1", "binary", auc=0.8, logloss=0.50, aucpr=0.7),
        _row("B_1", "binary", auc=0.8, logloss=0.40, aucpr=0.6),   # lower logloss wins the auc tie
        _row("C_1", "binary", auc=0.8, logloss=0.50, aucpr=0.9),   # same logloss as A: higher aucpr wins
        _row("D_1", "binary", auc=0.9, logloss=0.90, aucpr=0.1),
    ]
    assert list(build(rows, "binary", "auc")["model_id"]) == ["D_1", "B_1", "C_1", "A_1"]


def test_full_ties_fall_back_to_model_id_not_timings():
    rows = [_row("MLP_2", "regression", training_ms=1.0), _row("GLM_1", "regression", training_ms=500.0),
            _row("MLP_10", "regression", training_ms=2.0)]
    board = build(rows, "regression", "mean_residual_deviance")
    assert list(board["model_id"]) == ["GLM_1", "MLP_10", "MLP_2"]


def test_nan_sorts_last_whatever_the_direction():
    for task, metric, good, bad in [("binary", "auc", 0.9, 0.6), ("regression", "rmse", 1.0, 3.0)]:
        rows = [_row("A_1", task, **{metric: NAN}), _row("B_1", task, **{metric: bad}),
                _row("C_1", task, **{metric: good})]
        board = build(rows, task, metric)
        assert list(board["model_id"]) == ["C_1", "B_1", "A_1"], (task, metric)
        assert math.isnan(board[metric].iloc[-1])


def test_nan_in_a_tie_breaker_sorts_last():
    rows = [_row("A_1", "binary", auc=0.8, logloss=NAN), _row("B_1", "binary", auc=0.8, logloss=0.9)]
    assert list(build(rows, "binary", "auc")["model_id"]) == ["B_1", "A_1"]


def test_input_order_does_not_change_the_output():
    rows = [
        _row("GBM_1", "binary", auc=0.81, logloss=0.45),
        _row("GLM_1", "binary", auc=0.83, logloss=0.47),
        _row("MLP_1", "binary", auc=0.83, logloss=0.44),
        _row("MLP_2", "binary", auc=0.83, logloss=0.44, aucpr=0.6),
        _row("DRF_1", "binary", auc=NAN),
        _row("XRT_1", "binary", auc=0.81, logloss=0.45),
    ]
    expected = build(rows, "binary", "auc")
    assert list(expected["model_id"]) == ["MLP_2", "MLP_1", "GLM_1", "GBM_1", "XRT_1", "DRF_1"]
    # Every rotation, reversed too: each row takes every position at least once.
    for shift in range(len(rows)):
        for order in (rows[shift:] + rows[:shift], (rows[shift:] + rows[:shift])[::-1]):
            pd.testing.assert_frame_equal(build(order, "binary", "auc"), expected)


def test_sort_resorts_a_board_by_another_metric():
    rows = [_row("A_1", "binary", auc=0.9, logloss=0.6), _row("B_1", "binary", auc=0.7, logloss=0.3)]
    board = build(rows, "binary", "auc")
    resorted = sort(board, "binary", "logloss")
    assert list(resorted["model_id"]) == ["B_1", "A_1"]
    assert list(resorted.index) == [0, 1]


def test_empty_board_keeps_its_columns():
    board = build([], "regression", "mean_residual_deviance")
    assert board.empty and list(board.columns) == columns("regression", "mean_residual_deviance")


def _scores(seed: int, n: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, np.column_stack([1 - s, s])


def _confident_board(y: np.ndarray, preds: dict[str, np.ndarray], auc: dict[str, float] | None = None) -> pd.DataFrame:
    """``add_confidence`` on a binary board of ``preds``; ``auc`` overrides the scores the board is sorted by."""
    rows = []
    for model_id, p in preds.items():
        metrics = {m.name: m.fn(y, p) for m in metrics_for("binary")}
        metrics.update({"auc": auc[model_id]} if auc else {})
        rows.append(_row(model_id, "binary", **metrics))
    return add_confidence(build(rows, "binary", "auc"), preds, y, "binary", "auc")


def test_indistinguishable_flag_on_constructed_models():
    y, strong = _scores(2, n=600, signal=1.5)
    rng = np.random.default_rng(3)
    # "twin": the strong model with tiny noise, tied with it; "weak": far less signal.
    twin_s = np.clip(strong[:, 1] + rng.normal(scale=1e-3, size=len(y)), 0, 1)
    _, weak = _scores(2, n=600, signal=0.2)
    board = _confident_board(y, {"strong": strong, "twin": np.column_stack([1 - twin_s, twin_s]), "weak": weak})
    flags = dict(zip(board["model_id"], board["indistinguishable_from_leader"], strict=True))
    assert not flags["weak"]
    assert flags["twin"] and flags[board["model_id"].iloc[0]]
    assert list(board.columns[:5]) == ["model_id", "auc", "auc_ci_low", "auc_ci_high", "indistinguishable_from_leader"]
    for low, auc, high in board[["auc_ci_low", "auc", "auc_ci_high"]].itertuples(index=False):
        assert low < auc < high


def test_a_model_clearly_better_than_the_leader_is_not_indistinguishable():
    # The board's order comes from its scores (e.g. fold averages), not from these predictions:
    # "listed_first" leads the board but is clearly worse on the scored rows. The interval of
    # (leader - model) lies wholly below 0, which does not contain 0 either.
    y, strong = _scores(4, n=600, signal=1.5)
    _, weak = _scores(4, n=600, signal=0.2)
    board = _confident_board(y, {"listed_first": weak, "better": strong}, auc={"listed_first": 0.9, "better": 0.8})
    assert list(board["model_id"]) == ["listed_first", "better"]
    assert list(board["indistinguishable_from_leader"]) == [True, False]
