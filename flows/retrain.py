"""``retrain_flow``: train a challenger, compare it with the champion on a fixed holdout, promote only a better one.

The project folder ``<output_root>/<project>/`` holds::

    champion/                 the promoted model: a folder `python -m automl.predict` accepts, plus champion.json
                              (what it was trained on) and drift_profile.json (its training rows, for drift)
    leaderboard_history.csv   one row per run, append-only: who was compared, the scores, promoted or not, why,
                              the rows and source each run saw and their drift from the champion's
    history.html              the champion's holdout score over time, as a chart, and the runs
    challengers/<run-id>/     each run's AutoML output (leaderboard.csv, models/, leader/, decision.json,
                              drift.csv, ...)
    scores/                   predictions of the scoring flow (flows/score.py) and their drift tables
    .lock                     held while a run compares, promotes and writes history

Each decision is a Prefect event (``automl.champion.promoted`` or ``automl.champion.kept``; training rows that
drifted from the champion's: ``automl.drift.training-rows``) and a message through a notification block when
one is named (:mod:`flows.notify`); a failed run emits ``automl.run.failed``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from automl import drift
from automl.champion import (
    HISTORY_FILE,
    PROFILE_FILE,
    ChampionUnreadable,
    append_history,
    compare,
    load_champion,
    project_lock,
    promote,
    prune_challengers,
    split_holdout,
)
from automl.config import RunConfig
from automl.data import Dataset
from automl.errors import InputError
from automl.history_report import HISTORY_REPORT, write_history_report
from automl.io import atomic_write_text
from automl.state import RunState
from flows.automl_flow import artifact_key, ingest, publish_leaderboard, runs_root, secret_dataset, train
from flows.automl_flow import run_id as new_run_id
from flows.notify import DRIFT_IN_TRAINING, KEPT, PROMOTED, announce, on_failure

__all__ = ["retrain_flow"]

_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

def _check_inputs(project: str | None, margin: float | None, keep_challengers: int) -> None:
    if project is not None and not _PROJECT_NAME.match(project):
        raise InputError(f"project name {project!r} must start with a letter or digit and hold only letters, "
                         "digits, '.', '_' or '-' (it names a folder)")
    if margin is not None and not math.isfinite(margin):
        raise InputError(f"margin must be a finite number or None, but got {margin=}")
    if keep_challengers < 1:
        raise InputError(f"keep_challengers must be at least 1, but got {keep_challengers=}")


# -- tasks -------------------------------------------------------------------------------
@task(name="split-holdout", task_run_name="split-holdout-{ds.card.name}", cache_policy=NO_CACHE)
def split_task(ds: Dataset) -> tuple[Dataset, Dataset]:
    return split_holdout(ds)


@task(name="champion-challenger", task_run_name="champion-challenger-{state.config.project}", cache_policy=NO_CACHE)
def champion_challenger(state: RunState, holdout: Dataset, project_dir: Path, run_id: str, margin: float | None,
                        keep_challengers: int, notify: str | None = None) -> dict[str, Any]:
    """Under the project lock: compare with the champion, promote if the rule says so, append history; then
    announce the decision (and drift of the training rows from the champion's, if any).

    A champion folder that does not load is left as it is: the run records "not promoted"
    with the reason in the history and ``decision.json``, then fails with
    :class:`~automl.champion.ChampionUnreadable`.
    """
    leader = state.leader
    challenger_id = f"{run_id}/{leader.model_id}"
    champion_dir = project_dir / "champion"
    unreadable: ChampionUnreadable | None = None
    with project_lock(project_dir):
        try:
            champion, before = load_champion(champion_dir)
        except ChampionUnreadable as exc:
            unreadable, champion, before = exc, None, {}
        drift_table = _drift_from_champion(champion_dir, champion, state, holdout)
        decision = compare(leader, champion, holdout, state.sort_metric, margin, state.config.seed)
        if unreadable:  # scored for the record, but never promoted over a champion nobody compared
            decision = replace(decision, promoted=False, reason=f"not promoted: champion unreadable: {unreadable}")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if decision.promoted:
            promote(state.output / "leader", champion_dir,
                    {"champion": challenger_id, "run_id": run_id, "model_id": leader.model_id, "promoted_at": now,
                     "dataset_fingerprint": state.dataset.fingerprint, "trained_on": _trained_on(state),
                     "decision": asdict(decision)},
                    {PROFILE_FILE: _profile(state, leader, holdout).to_json()})
        row = _history_row(state, run_id, now, decision, challenger_id, before, margin, drift_table)
        append_history(project_dir, row)
        write_history_report(pd.read_csv(project_dir / HISTORY_FILE), project_dir / HISTORY_REPORT,
                             state.config.project)
        atomic_write_text(state.output / "decision.json", json.dumps(row, indent=1, default=str))
        pruned = prune_challengers(project_dir / "challengers", keep_challengers)
    message = (f"{'promoted' if decision.promoted else 'kept the champion'}: {decision.reason}"
               + (f"; removed old challengers {', '.join(pruned)}" if pruned else ""))
    (state.events.warn if unreadable else state.events.add)("retrain", message)
    state.events.write(state.output / "event_log.csv")
    if unreadable:
        raise unreadable
    _announce(state, row, drift_table, notify)
    return {**row, "champion": challenger_id if decision.promoted else row["champion_before"],
            "flow_run_id": str(flow_run.id)}


def _features(state: RunState, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[state.dataset.target], errors="ignore")


def _profile(state: RunState, leader: Any, holdout: Dataset) -> drift.Profile:
    """The new champion's reference for drift: its training rows, and its predictions on the fixed holdout
    (rows no model trained on, as new rows will be)."""
    rows = holdout.images if holdout.images is not None else _features(state, holdout.frame)  # images: their pixels
    return drift.Profile.from_frame(state.dataset.frame, state.dataset.target, leader.predict(rows))


def _drift_from_champion(champion_dir: Path, champion: Any, state: RunState, holdout: Dataset
                         ) -> pd.DataFrame | None:
    """This run's training rows (and the champion's predictions on its holdout) against the champion's profile;
    written to ``drift.csv`` in the run's folder. None without a profile (a first run, or image data)."""
    path = champion_dir / PROFILE_FILE
    if champion is None or not path.is_file() or getattr(state.dataset, "images", None) is not None:
        return None
    try:  # a champion that cannot score these rows is judged by compare(); its predictions just go unchecked
        predictions = champion.predict(_features(state, holdout.frame))
    except Exception:
        predictions = None
    table = drift.compare(drift.Profile.load(path), _features(state, state.dataset.frame), predictions)
    drift.write_drift_csv(table, state.output / "drift.csv")
    return table


def _trained_on(state: RunState) -> dict[str, Any]:
    """What the champion was trained on, for ``champion.json``: its rows (the fixed holdout's aside), their
    fingerprint, and the source as it was read (files with sizes and times, or the masked URL and the query)."""
    return {"rows": len(state.dataset.frame), "fingerprint": state.dataset.fingerprint,
            "source": state.dataset.provenance}


def _history_row(state: RunState, run_id: str, now: str, decision: Any, challenger_id: str, before: dict[str, Any],
                 margin: float | None, drift_table: pd.DataFrame | None) -> dict[str, Any]:
    return {"run_id": run_id, "time": now, "project": state.config.project,
            "dataset_fingerprint": state.dataset.fingerprint,
            "metric": decision.metric, "challenger": challenger_id,
            "champion_before": before.get("champion", ""),
            "challenger_cv": float(state.board[state.sort_metric].iloc[0]),
            "challenger_holdout": decision.challenger_score, "champion_holdout": decision.champion_score,
            "gain": decision.gain, "ci_low": decision.ci_low, "ci_high": decision.ci_high, "margin": margin,
            "holdout_rows": decision.holdout_rows, "promoted": "yes" if decision.promoted else "no",
            "reason": decision.reason, "rows": len(state.dataset.frame), "source": state.dataset.read_line(),
            "drift": "" if drift_table is None else drift.summary(drift_table)}


def _announce(state: RunState, row: dict[str, Any], drift_table: pd.DataFrame | None, notify: str | None) -> None:
    """Prefect events (and a notification) for the decision and for drift of the training rows."""
    project = str(state.config.project)
    payload = {k: row[k] for k in ("run_id", "challenger", "champion_before", "metric", "challenger_holdout",
                                   "champion_holdout", "gain", "rows")}
    if row["promoted"] == "yes":
        announce(PROMOTED, project, f"{row['challenger']} promoted: {row['reason']}", payload, notify)
    else:
        announce(KEPT, project, f"{row['challenger']} refused, the champion stays: {row['reason']}", payload, notify)
    flagged = [] if drift_table is None else drift.drifted(drift_table)
    if flagged:
        announce(DRIFT_IN_TRAINING, project, f"retraining on {row['rows']} rows: {row['drift']}",
                 {"drifted": flagged, "run_id": row["run_id"]}, notify)


@task(name="publish", task_run_name="publish-{state.config.project}", cache_policy=NO_CACHE)
def publish_retrain(state: RunState, result: dict[str, Any], project_dir: Path) -> None:
    """Leaderboard table artifact and a markdown summary with the promotion decision."""
    publish_leaderboard(state)
    project = state.config.project
    metric = result["metric"]

    def fmt(value: Any) -> str:
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    verdict = "**promoted**" if result["promoted"] == "yes" else "**not promoted**: the champion stays"
    create_markdown_artifact(
        key=artifact_key("retrain", project),
        markdown=(f"# {project}: challenger `{result['challenger']}` {verdict}\n\n"
                  f"{result['reason']}\n\n"
                  f"| model | {metric} on the fixed holdout ({result['holdout_rows']} rows) |\n|---|---|\n"
                  f"| challenger `{result['challenger']}` | {fmt(result['challenger_holdout'])} |\n"
                  f"| champion before `{result['champion_before'] or 'none'}` | {fmt(result['champion_holdout'])} |\n\n"
                  f"- gain {fmt(result['gain'])}, 95% CI [{fmt(result['ci_low'])}, {fmt(result['ci_high'])}], "
                  f"margin {result['margin'] if result['margin'] is not None else 'none (CI rule)'}\n"
                  f"- challenger {metric} by {state.protocol.label()} on the training rows: "
                  f"{fmt(result['challenger_cv'])}\n"
                  f"- champion now: `{result['champion']}` in `{project_dir / 'champion'}`\n"
                  f"- history: `{project_dir / HISTORY_FILE}`; this run: `{state.output}`\n"),
        description=f"Champion/challenger decision for {project}")


@flow(name="retrain", task_runner=ThreadPoolTaskRunner(max_workers=2), validate_parameters=True,
      on_failure=[on_failure])
def retrain_flow(dataset: str | None = None, options: dict[str, Any] | None = None, margin: float | None = None,
                 output_root: str | None = None, keep_challengers: int = 10, notify: str | None = None,
                 database_url_secret: str | None = None) -> dict[str, Any]:
    """Train a challenger on the training rows; promote it over the champion only if it is better.

    ``options`` are the run's settings by their ``python -m automl.run`` names, as for
    ``automl_flow`` (``output_dir`` excepted: challengers go under the project folder).

    Rows are split by a hash of their content: one in five form a fixed holdout that no
    model trains on, the same rows in every run. The challenger is an AutoML run on the
    other rows (``max_runtime_secs`` bounds it), written to ``challengers/<run-id>/``.
    Its leader and the champion both predict the holdout and are scored with the sort
    metric; a paired bootstrap (1,000 resamples of the holdout rows) gives a 95 %
    interval of the gain (challenger minus champion, signed so that positive is better).

    Promotion rule: with no champion, the challenger is promoted. With ``margin`` None
    (default), it is promoted when the interval's lower end is above 0 (better by more
    than noise). With a ``margin``, it is promoted when the gain exceeds ``margin``
    (e.g. 0.01 AUC; a negative margin accepts a fresh model unless it is worse by more).
    A champion that cannot score the data (other task, classes or columns) is replaced. A
    champion folder that does not load is never replaced: the run records "not promoted"
    and why in the history, then fails with ``ChampionUnreadable``.

    Outputs go under ``output_root``, else ``$AUTOML_RUNS_DIR``, else ``runs``, in
    ``<project>/`` (default project: the dataset name). Returns the history row, the
    champion after the run and the flow run id. ``dataset`` may be a database URL (with ``options``'
    ``query``), or come from the Prefect ``Secret`` block ``database_url_secret``; ``notify`` names a
    notification block for the decision (:mod:`flows.notify`).
    """
    dataset = secret_dataset(dataset, database_url_secret)
    options = dict(options or {})
    if options.get("output_dir") is not None:
        raise InputError("retrain_flow writes each challenger under <output_root>/<project>/challengers/; "
                         "pass output_root instead of output_dir")
    _check_inputs(options.get("project"), margin, keep_challengers)
    # Checks the settings before any data loads; the budget counts from here.
    config = RunConfig.from_options(**{"started_at": time.time(), **options, "dataset": dataset})
    ds = ingest(config.source, config.target, config.task)
    project = config.project or ds.card.name
    _check_inputs(project, margin, keep_challengers)
    project_dir = runs_root(output_root) / project
    run_id = new_run_id()
    # The training rows exist only in memory (dataset None): worker processes get a copy of them.
    config = config.replace(dataset=None, project=project, output_dir=str(project_dir / "challengers" / run_id))
    training, holdout = split_task(ds)
    state = train(config, training)
    result = champion_challenger(state, holdout, project_dir, run_id, margin, keep_challengers, notify)
    publish_retrain(state, result, project_dir)
    return result
