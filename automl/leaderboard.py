"""The leaderboard: one row per cross-validated model, ordered by the metric registry."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from automl.metrics import get, metrics_for

__all__ = ["build", "sort", "columns"]

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
