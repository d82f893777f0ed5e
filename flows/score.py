"""``score_flow``: score new rows with the project's champion, on a schedule, and watch them for drift.

For a project trained by ``flows/retrain.py`` (``<output_root>/<project>/champion/``), each run:

1. reads the source (a file, a folder or glob of files, a SQL query: the same kinds as a run's dataset);
2. checks that the champion can score it (its columns; the classes of a target column, when the rows have one):
   if not, the flow run fails with the one-line reason and writes nothing;
3. writes the predictions with the champion's id and the time: ``scores/<run-id>.csv`` (or ``.parquet``) in
   the project folder, another folder (``destination``), or a table of a database (``destination`` a URL,
   ``table`` its name), appended in one transaction;
4. compares the rows and the predictions with the champion's training rows (:mod:`automl.drift`), writes
   ``scores/<run-id>-drift.csv`` and emits ``automl.drift.detected`` when a feature drifted
   (:mod:`flows.notify`): a deployment trigger can retrain on it;
5. publishes a summary artifact.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from automl.champion import PROFILE_FILE, load_champion
from automl.config import RunConfig
from automl.data import Dataset, load_rows
from automl.errors import InputError
from automl.io import write_csv, write_parquet
from automl.sources import Source
from flows.automl_flow import artifact_key, retry_unless_input_error, run_id, runs_root, secret_dataset
from flows.notify import DRIFT, announce, on_failure

__all__ = ["score_flow", "score_rows", "write_scores"]

def score_rows(champion: Any, info: dict[str, Any], ds: Dataset, keep_columns: list[str] | None = None
               ) -> pd.DataFrame:
    """The champion's predictions for ``ds``'s rows, stamped with its id and the time; InputError (one line) when
    it cannot score them."""
    frame, schema = ds.frame, champion.schema
    champion.check_columns(frame, ds.source)
    if schema.target in frame.columns and schema.task not in ("regression", "image"):
        new = sorted(set(frame[schema.target].dropna().unique()) - set(schema.classes), key=str)
        if new:
            raise InputError(f"{ds.source}: column {schema.target!r} holds classes the champion never saw "
                             f"({', '.join(map(str, new[:5]))}); retrain the project on rows with these classes")
    missing = [c for c in keep_columns or () if c not in frame.columns]
    if missing:
        raise InputError(f"{ds.source}: keep_columns {missing} are not columns of the data; drop them or fix the names")
    preds = champion.predict(frame)
    kept = frame[list(keep_columns or ())].reset_index(drop=True)
    stamp = pd.DataFrame({"model_id": champion.model_id, "champion": info.get("champion", champion.model_id),
                          "scored_at": datetime.now(UTC).isoformat(timespec="seconds")}, index=preds.index)
    return pd.concat([kept, preds.reset_index(drop=True), stamp], axis=1)


def write_scores(scores: pd.DataFrame, folder: Path, name: str, database: str | None = None,
                 table: str | None = None, file_format: str = "csv") -> str:
    """Write ``scores`` atomically: ``<folder>/<name>.csv`` (or ``.parquet``), or appended to ``table`` of the
    database URL ``database`` in one transaction. Returns where they went (a URL without its password)."""
    if database is None:
        path = folder / f"{name}.{file_format}"
        if file_format == "parquet":
            write_parquet(scores, path)
        else:
            write_csv(scores, path, verbatim=["predict"])
        return str(path)
    if not table:
        raise InputError(f"destination {database!r} is a database: give the table to append the predictions to")
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(database)
    shown = url.render_as_string(hide_password=True)
    try:
        engine = create_engine(url)
        with engine.begin() as connection:  # one transaction: a reader sees all of this run's rows or none
            scores.to_sql(table, connection, if_exists="append", index=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"destination {shown} table {table!r}: cannot write the predictions ({first}); check "
                         "the URL, that the server runs and that the table's columns match") from None
    return f"{shown} table {table}"


@task(name="read-rows", task_run_name="read-rows-{source.name}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=10, retry_condition_fn=retry_unless_input_error)
def read_rows(source: Source) -> Dataset:
    """The rows to score (new rows each run: never cached); flaky storage is retried, bad input is not."""
    return load_rows(source)


@task(name="load-champion", task_run_name="load-champion-{project}", cache_policy=NO_CACHE)
def champion_task(project_dir: Path, project: str) -> tuple[Any, dict[str, Any]]:
    champion, info = load_champion(project_dir / "champion")
    if champion is None:
        raise InputError(f"project {project!r} has no champion in {project_dir / 'champion'}; run its retrain "
                         "deployment first")
    return champion, info


@task(name="score", task_run_name="score-{project}", cache_policy=NO_CACHE)
def score_task(champion: Any, info: dict[str, Any], ds: Dataset, project: str, keep_columns: list[str] | None
               ) -> pd.DataFrame:
    return score_rows(champion, info, ds, keep_columns)


@task(name="drift", task_run_name="drift-{project}", cache_policy=NO_CACHE)
def drift_task(champion_dir: Path, ds: Dataset, scores: pd.DataFrame, project: str, path: Path,
               notify: str | None) -> str:
    """Compare the rows and predictions with the champion's training profile; write the table; announce drift."""
    from automl import drift

    profile_path = champion_dir / PROFILE_FILE
    if not profile_path.exists():
        return "no drift check: the champion has no training profile (promoted before drift checks existed)"
    table = drift.compare(drift.Profile.load(profile_path), ds.frame, scores)
    drift.write_drift_csv(table, path)
    text = drift.summary(table)
    flagged = drift.drifted(table)
    if flagged:
        announce(DRIFT, project, f"scoring {ds.source}: {text}", {"drifted": flagged, "drift_csv": str(path)},
                 notify)
    create_table_artifact(key=artifact_key("drift", project), table=json.loads(table.to_json(orient="records")),
                          description=f"Drift of the scored rows against {project}'s champion: {text}")
    return text


@flow(name="score", validate_parameters=True, on_failure=[on_failure])
def score_flow(dataset: str | None = None, project: str | None = None, options: dict[str, Any] | None = None,
               output_root: str | None = None, destination: str | None = None, table: str | None = None,
               keep_columns: list[str] | None = None, notify: str | None = None,
               database_url_secret: str | None = None, file_format: str = "csv") -> dict[str, Any]:
    """Score ``dataset`` (a file, folder, glob or database URL; ``options`` as for a run, e.g. ``query``,
    ``newest_days``, ``date_column``) with the champion of ``project`` (default: the dataset's name) under
    ``output_root`` (else ``$AUTOML_RUNS_DIR``, else ``runs``).

    Predictions go to ``<project>/scores/<run-id>.csv`` (``file_format="parquet"``: ``.parquet``), to the folder
    ``destination``, or, when ``destination`` is a database URL, are appended to its ``table``. ``keep_columns``
    copies input columns (an id) beside them. ``dataset`` may come from the Prefect ``Secret`` block
    ``database_url_secret``; ``notify`` names a notification block (:mod:`flows.notify`). Returns where the
    predictions went, the row count and the drift summary.
    """
    if file_format not in ("csv", "parquet"):
        raise InputError(f"file_format must be 'csv' or 'parquet', but got {file_format=}")
    dataset = secret_dataset(dataset, database_url_secret)
    config = RunConfig.from_options(**{**(options or {}), "dataset": dataset})
    ds = read_rows(config.source)
    project = project or config.project or ds.card.name
    project_dir = runs_root(output_root) / project
    champion, info = champion_task(project_dir, project)
    scores = score_task(champion, info, ds, project, keep_columns)
    name = run_id()
    database = destination if destination and "://" in destination else None
    folder = Path(destination) if destination and database is None else project_dir / "scores"
    where = write_scores(scores, folder, name, database, table, file_format)
    drift_text = drift_task(project_dir / "champion", ds, scores, project, project_dir / "scores" / f"{name}-drift.csv",
                            notify)
    summary = {"project": project, "rows": len(scores), "predictions": where, "model_id": champion.model_id,
               "champion": info.get("champion", champion.model_id), "drift": drift_text,
               "source": ds.read_line()}
    create_markdown_artifact(key=artifact_key("score", project), description=f"Scoring run of {project}",
                             markdown=(f"# {project}: {len(scores)} rows scored by `{summary['champion']}`\n\n"
                                       f"- source: `{ds.source}`\n- predictions: `{where}`\n- drift: {drift_text}\n"))
    return summary

