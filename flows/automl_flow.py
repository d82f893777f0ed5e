"""``automl_flow``: ingest → preprocess → train models (the scheduler's queue) → leaderboard → publish.

Each task wraps one stage function of the library (``automl.state.start``, ``automl.jobs.run_jobs``,
``automl.outputs``). Only
ingest is cached, keyed on a fingerprint of the source (file bytes, or a folder's file sizes and times, or a
query's checksum; + dataset card + options) that is computed without parsing the table; the later stages hand each other
the in-memory run state, so they are never cached. ``flows/retrain.py`` reuses
:func:`ingest` and :func:`train`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from automl import outputs
from automl import search as search_stage
from automl.budget import Budget
from automl.config import RunConfig
from automl.data import Dataset, builtin_cards, cards_dir, load
from automl.errors import InputError
from automl.events import EventLog
from automl.jobs import run_jobs
from automl.sources import Source, as_source, fingerprint
from automl.state import DEFAULT_RUNTIME_SECS, RUNS_DIR_ENV, RunState, start
from flows.search_worker import check_fan_out, fan_out

__all__ = ["automl_flow", "artifact_key", "ingest", "train", "publish_leaderboard", "runs_root",
           "source_key", "secret_dataset", "RunProgress", "RUNS_DIR_ENV"]

#: A cached ingest is reused this long at most, even when the source is unchanged.
INGEST_CACHE_TTL = timedelta(days=7)
_CHUNK = 1 << 20


def runs_root(output_root: str | os.PathLike[str] | None = None) -> Path:
    """Where project folders go: ``output_root``, else ``$AUTOML_RUNS_DIR``, else ``runs``."""
    return Path(output_root or os.environ.get(RUNS_DIR_ENV) or "runs")


def run_id() -> str:
    """``<UTC time>-<flow run id>``: sorts by time, unique per flow run (and stable across its retries)."""
    from prefect.runtime import flow_run

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{str(flow_run.id or uuid.uuid4())[:8]}"


def artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    return f"{prefix}-" + "-".join(filter(None, slug.split("-")))


def source_key(source: Source | str, target: str | None = None, task_type: str | None = None) -> str | None:
    """A cheap fingerprint of what :func:`automl.data.load` would return: the source, card, options, overrides.

    Also covers the loading code and the package version. A file (a built-in's too) is hashed, not parsed; a
    folder or glob pattern by its files' paths, sizes and modification times (not gigabytes of bytes), a query by
    the masked URL, the query and a checksum its PostgreSQL server computes (:func:`automl.sources.fingerprint`).
    ``None`` (do not cache) when that cannot be told (no readable file, a database other than PostgreSQL):
    loading then reads the source again, or fails with the user's error message, uncached.
    """
    import automl
    import automl.data
    import automl.sources
    import automl.tables

    source = as_source(source)
    digest = hashlib.sha256(json.dumps([automl.__version__, source.shown, source.query, source.newest_days,
                                        source.date_column, target, task_type]).encode())
    # The loading code is part of the result: a changed loader must not be served an old pickle.
    for loader in (automl.data, automl.sources, automl.tables):
        digest.update(Path(loader.__file__).read_bytes())
    card = builtin_cards().get(source.location)
    if card is not None:
        digest.update(json.dumps(dataclasses.asdict(card), sort_keys=True, default=str).encode())
        if card.loader:  # a bundled loader (scikit-learn): its data changes only with its package
            package = __import__(card.loader.split(".")[0])
            digest.update(str(getattr(package, "__version__", "")).encode())
            return digest.hexdigest()[:16]
        path = cards_dir() / str(card.file)
    else:
        if source.kind != "file" or source.newest_days is not None:  # what is read, and which files the window keeps
            found = fingerprint(source)
            if found is None:
                return None
            digest.update(found.encode())
            if source.kind != "file":
                return digest.hexdigest()[:16]
        path = Path(source.location)
    try:
        digest.update(str(path.resolve()).encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()[:16]


def _ingest_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    key = source_key(parameters["source"], parameters.get("target"), parameters.get("task_type"))
    return None if key is None else f"automl-ingest-{key}"


def retry_unless_input_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry reading flaky storage, but not input the user must fix."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return False


def _ingest_run_name() -> str:
    """``ingest-<dataset name, file name, pattern or database>``: a full path makes an unreadable run name."""
    from prefect.runtime import task_run

    return f"ingest-{Path(as_source(task_run.parameters['source']).shown).name}"


@task(name="ingest", task_run_name=_ingest_run_name, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_input_error, cache_key_fn=_ingest_cache_key,
      cache_expiration=INGEST_CACHE_TTL)
def ingest(source: Source | str, target: str | None = None, task_type: str | None = None) -> Dataset:
    """Load and validate a built-in dataset, a file, a folder, a glob pattern or a query (``RunConfig.source``);
    cached on :func:`source_key`, never on a DataFrame."""
    return load(source, target, task_type)


@task(name="preprocess", task_run_name="preprocess-{ds.card.name}", cache_policy=NO_CACHE)
def preprocess(config: RunConfig, ds: Dataset, events: EventLog) -> RunState:
    """Infer the schema, encode the target, choose the protocol; the run's clock runs from ``started_at``."""
    return start(config, ds, events=events)


@task(name="start-search-workers", task_run_name="start-search-workers-{state.config.project}",
      cache_policy=NO_CACHE)
def start_search_workers(state: RunState) -> None:
    """Open the network search's study and start its worker processes (before the fan-out, which joins it)."""
    search_stage.start_workers(state)


@task(name="train-models", task_run_name="train-models-{state.config.project}", cache_policy=NO_CACHE)
def train_models(state: RunState) -> int:
    """Every training job of the run, by the scheduler's queue (``automl.jobs``); returns the models ranked."""
    run_jobs(state)
    return len(state.evaluated)


@task(name="leaderboard", task_run_name="leaderboard-{state.config.project}", cache_policy=NO_CACHE)
def leaderboard(state: RunState) -> int:
    return len(outputs.finish(state))


class RunProgress:
    """An :class:`automl.events.EventLog` listener that keeps a Prefect progress artifact current.

    Progress is the share of the time budget spent (the run ends with its budget); the
    description counts finished search trials and echoes the latest event.
    """

    def __init__(self, budget: Budget, key: str) -> None:
        self.budget, self.trials = budget, 0
        self.artifact_id = create_progress_artifact(0.0, key=key, description="starting")

    def __call__(self, event: dict[str, str]) -> None:
        if event["stage"] == "search" and event["message"].startswith("trial "):
            self.trials += 1
        spent = 100.0 * self.budget.elapsed() / self.budget.seconds
        # 100 % is kept for the end: a run may spend its whole budget before writing outputs.
        self._update(min(spent, 99.0), f"{self.trials} search trials; [{event['stage']}] {event['message']}")

    def finish(self) -> None:
        self._update(100.0, f"done: {self.trials} search trials")

    def _update(self, progress: float, description: str) -> None:
        update_progress_artifact(self.artifact_id, round(progress, 1), description=description)


def train(config: RunConfig, ds: Dataset) -> RunState:
    """Every training stage in order, as tasks, with a progress artifact kept current while they run."""
    events = EventLog(verbose=config.is_verbose)
    progress = RunProgress(_budget(config), artifact_key("progress", ds.card.name))
    events.subscribe(progress)
    try:
        deployment = check_fan_out(config)  # before anything starts: a missing deployment costs nothing
        state = preprocess(config, ds, events)
        start_search_workers(state)
        fan_out(state, deployment)
        train_models(state)
        leaderboard(state)
    finally:
        events.unsubscribe(progress)
    progress.finish()
    return state


def _budget(config: RunConfig) -> Budget:
    """The run's clock before the data says which default budget applies (for the progress bar only)."""
    return Budget.since_wall_time(config.max_runtime_secs or DEFAULT_RUNTIME_SECS, config.started_at or time.time())


def publish_leaderboard(state: RunState) -> None:
    """The leaderboard as a table artifact, versioned under ``leaderboard-<dataset>``."""
    name = state.dataset.card.name
    records = json.loads(state.board.to_json(orient="records"))  # plain floats (numpy is rejected); NaN → null
    create_table_artifact(key=artifact_key("leaderboard", name), table=records,
                          description=f"Leaderboard of {name}, sorted by {state.sort_metric}")


@task(name="publish", task_run_name="publish-{state.config.project}", cache_policy=NO_CACHE)
def publish(state: RunState) -> dict[str, Any]:
    """Leaderboard table artifact and a markdown summary."""
    board, summary = state.board, outputs.summary(state)
    name = state.dataset.card.name
    publish_leaderboard(state)
    top = board.iloc[0]
    create_markdown_artifact(
        key=artifact_key("summary", name),
        markdown=(f"# {name}: leader `{top['model_id']}`\n\n"
                  f"- {state.sort_metric}: **{top[state.sort_metric]:.4f}** ({summary['evaluation']['label']})\n"
                  f"- models ranked: {len(board)}; search trials: {summary['trials']}\n"
                  f"- run time: {summary['elapsed_secs']}s of {summary['max_runtime_secs']}s\n"
                  f"- outputs: `{summary['output_dir']}`\n"
                  f"- report: [report.html]({Path(summary['output_dir']).resolve().as_uri()}/report.html) "
                  f"(leaderboard with intervals, curves, importances; opens offline)\n"),
        description=f"AutoML run summary for {name}")
    return summary


def secret_dataset(dataset: str | None, database_url_secret: str | None) -> str:
    """``dataset``, or the database URL held in the Prefect ``Secret`` block named ``database_url_secret``."""
    if (dataset is None) == (database_url_secret is None):
        raise InputError(f"give dataset or database_url_secret (a Prefect Secret block holding a database URL), "
                         f"not {'both' if dataset else 'neither'}")
    if database_url_secret is None:
        return str(dataset)
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(database_url_secret).get())
    except ValueError as exc:  # no such block
        raise InputError(f"database_url_secret {database_url_secret!r}: {exc}; create it with "
                         "Secret(value='postgresql://…').save(name)") from None


@flow(name="automl", task_runner=ThreadPoolTaskRunner(max_workers=2), validate_parameters=True)
def automl_flow(dataset: str | None = None, options: dict[str, Any] | None = None,
                database_url_secret: str | None = None) -> dict[str, Any]:
    """Run AutoML on a built-in dataset name, a CSV/Parquet path, a folder, a glob pattern or a database URL with
    ``options["query"]``; return the run summary.

    ``options`` are the run's settings by their ``python -m automl.run`` names
    (``max_runtime_secs``, ``max_models``, ``include_algos``, ``query``, ``newest_days``, …; see
    :class:`automl.config.RunConfig`). Outputs go to ``output_dir``, else
    ``$AUTOML_RUNS_DIR/<project>``, else ``runs/<project>``. ``database_url_secret`` names a Prefect ``Secret``
    block holding the database URL, in place of ``dataset``: the URL (and a password in it) is then no flow
    parameter, and run.json and the logs show it masked as always.
    """
    dataset = secret_dataset(dataset, database_url_secret)
    # Checked before any data loads; the budget counts from the CLI's start, else from here.
    config = RunConfig.from_options(**{"started_at": time.time(), **(options or {}), "dataset": dataset})
    ds = ingest(config.source, config.target, config.task)
    state = train(config, ds)
    return publish(state)
