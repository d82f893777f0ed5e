"""The outputs stage: rank every evaluated model, export them, explain the leader, write the run's files.

Every file is written atomically, in an order that keeps the folder consistent if the
process dies at any moment: models, then the leader, then ``leaderboard.csv`` and
``trials.csv``; model folders no longer on the board are removed only after the new
board names its models.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from automl import leaderboard as lb
from automl.budget import REPORT_SECONDS
from automl.config import ALGOS, ENSEMBLE_ALGO, resolve_algo
from automl.engines import get_engine
from automl.errors import InputError
from automl.io import atomic_dir, atomic_write_text, remove_leftovers, write_csv
from automl.metrics import get, score_all
from automl.state import RunState

__all__ = ["finish", "summary", "best_model", "trials_frame", "board_rows"]


def finish(state: RunState) -> pd.DataFrame:
    """Rank, export and explain; write ``leaderboard.csv``, ``trials.csv``, ``report.html``, ``run.json``."""
    if not state.evaluated:
        raise InputError(f"{state.dataset.source}: no model could be trained within "
                         f"{state.config.max_runtime_secs:g}s; raise --max-runtime-secs")
    board, preds, y_scored, scores = _board(state)
    out = state.output
    for leftover in remove_leftovers(out):  # a run killed while writing
        state.events.add("leaderboard", f"removed {leftover.name}, left by an interrupted write")
    by_id = {e.model.model_id: e.model for e in state.evaluated}
    from automl.export import link_tree, save_model

    evaluation = _evaluation(state)
    # Bases first, so that ensembles can hard-link them instead of saving them again.
    for model_id in sorted(board["model_id"], key=lambda m: by_id[m].algo == ENSEMBLE_ALGO):
        save_model(by_id[model_id], out / "models" / model_id, evaluation, {"dataset": state.dataset_info()},
                   saved=out / "models", metrics=scores.get(model_id))
    state.leader = by_id[board["model_id"].iloc[0]]
    with atomic_dir(out / "leader") as tmp:
        link_tree(out / "models" / state.leader.model_id, tmp)
    write_csv(board, out / "leaderboard.csv")
    trials = trials_frame(state)
    write_csv(trials, out / "trials.csv")
    for stale in (out / "models").iterdir():  # only now: the board on disk no longer names them
        if stale.is_dir() and not stale.name.startswith(".") and stale.name not in by_id:
            shutil.rmtree(stale)
    state.board = board
    state.events.add("leaderboard", f"leader {state.leader.model_id} {state.sort_metric}="
                                    f"{board[state.sort_metric].iloc[0]:.4f}; {len(board)} models")
    _explain(state, board, preds, y_scored, trials)
    state.events.add("report", f"report.html written; run took {state.budget.elapsed():.1f}s "
                               f"of {state.config.max_runtime_secs:g}s")
    atomic_write_text(out / "run.json", json.dumps(summary(state), indent=1, default=str))
    state.events.write(out / "event_log.csv")
    return board


def _board(state: RunState) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, dict[str, dict]]:
    """The ranked board with intervals, each model's scored predictions, the scored labels, and the
    leaderboard frame's metrics of each model (empty without a leaderboard frame)."""
    rows = board_rows(state)
    preds = {e.model.model_id: e.oof for e in state.evaluated}
    y_scored, scores = state.y[state.protocol.scored], {}
    if state.leaderboard_frame is not None:  # H2O's leaderboard_frame: every row scored on the user's rows
        x_lb, y_scored = state.leaderboard_frame
        preds = {e.model.model_id: e.model.predict_proba(x_lb) for e in state.evaluated}
        for row in rows:
            row["metrics"] = scores[row["model_id"]] = score_all(state.schema.task, y_scored, preds[row["model_id"]])
    board = lb.build(rows, state.schema.task, state.sort_metric)
    board = lb.add_confidence(board, preds, y_scored, state.schema.task, state.sort_metric, state.config.seed)
    return board, preds, y_scored, scores


def board_rows(state: RunState) -> list[dict[str, Any]]:
    """The rows :func:`automl.leaderboard.build` ranks: one per evaluated model, with the protocol's metrics."""
    return [{"model_id": e.model.model_id, "algo": e.model.algo, "params": e.model.params,
             "metrics": e.model.metrics, "training_time_ms": e.training_time_ms,
             "predict_time_per_row_ms": e.predict_time_per_row_ms} for e in state.evaluated]


def _evaluation(state: RunState) -> dict[str, Any]:
    """Which protocol scored the board's metrics (``model.json``, ``run.json``, the report, Prefect)."""
    if state.leaderboard_frame is not None:
        return {"protocol": "leaderboard_frame", "rows_scored": int(len(state.leaderboard_frame[1])),
                "source": str(state.config.evaluation.leaderboard_frame or "a DataFrame"),
                "label": f"leaderboard frame of {len(state.leaderboard_frame[1])} rows given by the user",
                "models_trained_by": state.protocol.label()}
    return state.protocol.describe()


def summary(state: RunState) -> dict[str, Any]:
    """What the run did, for ``run.json`` and the Prefect artifact."""
    states = pd.Series([t.state for t in state.trials], dtype="object").value_counts().to_dict()
    return {"project": state.config.project, "dataset": state.dataset_info(), "source": state.dataset.provenance,
            "task": state.schema.task, "sort_metric": state.sort_metric,
            "leader": state.leader.model_id if state.leader else None,
            "max_runtime_secs": state.config.max_runtime_secs, "elapsed_secs": round(state.budget.elapsed(), 2),
            "engine": state.config.search.engine, "seed": state.config.seed, "evaluation": _evaluation(state),
            "nfolds": state.protocol.nfolds, "trials": states, "output_dir": str(state.output),
            "schedule": _schedule(state), "config": json.loads(state.config.to_json())}


def _schedule(state: RunState) -> dict[str, Any] | None:
    """The scheduler's ledger (jobs, skips, core-seconds spent and wasted per family) and the CPU used by the
    run's process and its reaped workers since the process started, in % of one core over the run's wall time."""
    if state.schedule is None:
        return None
    from automl.schedule import process_cpu_seconds

    return {**state.schedule, "cpu_percent": round(100 * process_cpu_seconds() / max(state.budget.elapsed(), 1e-9), 1)}


def trials_frame(state: RunState) -> pd.DataFrame:
    """``trials.csv``: one row per finished search trial; parameters as one JSON column."""
    cols = ["family", "number", "state", "value", "best_epoch", "duration_s", "params", "error", "worker"]
    rows = [{**asdict(t), "params": json.dumps(t.params, sort_keys=True)} for t in state.trials]
    return pd.DataFrame(rows, columns=cols).rename(columns={"value": f"validation_{state.sort_metric}"})


def best_model(state: RunState, algorithm: str | None = None, criterion: str | None = None) -> Any:
    """The best model of a family by a leaderboard column, with H2O's semantics (see ``AutoML.get_best_model``)."""
    board = state.board.copy() if state.board is not None else None
    if board is None:
        raise RuntimeError("call fit() first")
    if algorithm is not None:
        family = resolve_algo(algorithm)
        if family is None and algorithm.lower() != "basemodel":
            raise ValueError(f"unknown algorithm {algorithm!r}; use basemodel or one of {', '.join(ALGOS)}")
        board = board[board["algo"] != ENSEMBLE_ALGO] if family is None else board[board["algo"] == family]
        if board.empty:
            raise ValueError(f"no {algorithm} model on the leaderboard")
    criterion = criterion or state.sort_metric
    if criterion in lb.TIMING_COLUMNS:
        ascending = True
    else:
        try:
            ascending = not get(criterion, state.schema.task).higher_is_better
        except ValueError as exc:
            raise ValueError(f"criterion: {exc}") from None
    best = board.sort_values([criterion, "model_id"], ascending=[ascending, True], kind="mergesort")
    model_id = best["model_id"].iloc[0]
    return next(e.model for e in state.evaluated if e.model.model_id == model_id)


def _explain(state: RunState, board: pd.DataFrame, preds: dict[str, np.ndarray], y_scored: np.ndarray,
             trials: pd.DataFrame) -> None:
    """``feature_importance.csv`` (permutation importance of the leader) and ``report.html``."""
    from automl.explain import permutation_importance
    from automl.report import write_report
    from automl.search import search_job

    out = state.output
    importance = None
    if state.schema.task != "image":
        importance = permutation_importance(state.leader, state.x, state.y, list(state.protocol.folds), state.metric,
                                            state.schema.task, n_repeats=3, seed=state.config.seed,
                                            deadline=state.budget.deadline
                                            - state.budget.end_seconds(REPORT_SECONDS))
        write_csv(importance, out / "feature_importance.csv")
    params = None
    if any(t.family == state.family for t in state.trials):  # the network search's study (GBM's aside)
        params = get_engine(state.config.search.engine).param_importances(search_job(state))
    info = summary(state)
    write_report(out / "report.html", title=f"AutoML report: {state.config.project}", task=state.schema.task,
                 classes=state.schema.classes, sort_metric=state.sort_metric, board=board, y=y_scored,
                 oof=preds, trials=trials, param_importances=params, feature_importance=importance,
                 summary={"dataset": info["dataset"]["source"], "rows": str(info["dataset"]["rows"]),
                          "task": state.schema.task, "budget": f"{state.config.max_runtime_secs:g}s",
                          "engine": state.config.search.engine, "seed": str(state.config.seed),
                          "evaluation": info["evaluation"]["label"]},
                 evaluation="out-of-fold" if state.leaderboard_frame is None and state.protocol.name == "cv"
                 else "holdout")
