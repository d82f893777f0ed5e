"""The leaderboard: one row per cross-validated model, ordered by the metric registry."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from automl.metrics import get, metrics_for
from automl.stats import Bootstrap, percentile_interval

__all__ = ["build", "sort", "columns", "add_confidence"]

TIMING_COLUMNS = ["training_time_ms", "predict_time_per_row_ms"]


def columns(task: str, sort_metric: str) -> list[str]:
    """Stable column order: id, sort metric, the other metrics, timings, algo, hyperparameters."""
    others = [m.name for m in metrics_for(task) if m.name != sort_metric]
    return ["model_id", sort_metric, *others, *TIMING_COLUMNS, "algo", "hyperparameters"]


def build(rows: list[dict[str, Any]], task: str, sort_metric: str) -> pd.DataFrame:
    """Rows of ``model_id, algo, params, metrics, timings`` → the sorted leaderboard frame."""
    records = [{"model_id": r["model_id"], **r["metrics"],
                "training_time_ms": round(r["training_time_ms"], 1),
                "predict_time_per_row_ms": round(r["predict_time_per_row_ms"], 4),
                "algo": r["algo"], "hyperparameters": json.dumps(r["params"], sort_keys=True, default=str)}
               for r in rows]
    return sort(pd.DataFrame(records, columns=columns(task, sort_metric)), task, sort_metric)


def sort(board: pd.DataFrame, task: str, sort_metric: str) -> pd.DataFrame:
    """Best first by ``sort_metric``; ties broken by the other metrics in column order, then model_id.

    Directions come from the registry; missing values sort last. Timings never break
    ties: they differ from run to run and would make the order irreproducible.
    """
    keys = [sort_metric] + [m.name for m in metrics_for(task) if m.name != sort_metric and m.name in board]
    ascending = [not get(k, task).higher_is_better for k in keys]
    return board.sort_values([*keys, "model_id"], ascending=[*ascending, True], na_position="last",
                             kind="mergesort").reset_index(drop=True)


def add_confidence(board: pd.DataFrame, preds: dict[str, np.ndarray], y: np.ndarray, task: str,
                   sort_metric: str, seed: int = 0) -> pd.DataFrame:
    """Insert ``<metric>_ci_low``, ``<metric>_ci_high`` and ``indistinguishable_from_leader``.

    The interval is a 95 % bootstrap percentile interval of the sort metric over the
    scored rows. A model is indistinguishable from the leader when the paired
    bootstrap interval of (leader − model), on the same resampled rows, contains 0
    (``low <= 0 <= high``): a model clearly better than the leader on these rows, which
    happens when the board was ordered by other scores, is distinguishable too.
    """
    metric = get(sort_metric, task)
    # One pass over the resamples for every model: the paired differences use the same rows.
    samples = Bootstrap(y, task, seed=seed).samples_of(metric, [preds[m] for m in board["model_id"]])
    intervals = [percentile_interval(s) for s in samples]
    gaps = [percentile_interval(metric.sign() * (samples[0] - s)) for s in samples]
    lows, highs = [low for low, _ in intervals], [high for _, high in intervals]
    ties = [bool(low <= 0.0 <= high) for low, high in gaps]
    at = board.columns.get_loc(sort_metric) + 1
    out = board.copy()
    out.insert(at, f"{sort_metric}_ci_low", lows)
    out.insert(at + 1, f"{sort_metric}_ci_high", highs)
    out.insert(at + 2, "indistinguishable_from_leader", ties)
    return out
