"""``automl_flow``: ingest → preprocess → train models (the scheduler's queue) → leaderboard → publish.

Each task wraps one stage function of the library (``automl.state.start``, ``automl.jobs.run_jobs``,
``automl.outputs``). Only
ingest is cached, keyed on a fingerprint of the source (file bytes + dataset card +
overrides) that is computed without parsing the table; the later stages hand each other
the in-memory run state, so they are never cached. ``flows/retrain.py`` reuses
:func:`ingest` and :func:`train`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from datetime import timedelta
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
from automl.state import DEFAULT_RUNTIME_SECS, RUNS_DIR_ENV, RunState, start
from flows.search_worker import check_fan_out, fan_out

__all__ = ["automl_flow", "artifact_key", "ingest", "train", "publish_leaderboard", "runs_root",
           "source_key", "RunProgress", "RUNS_DIR_ENV"]

#: A cached ingest is reused this long at most, even when the source is unchanged.
INGEST_CACHE_TTL = timedelta(days=7)
_CHUNK = 1 << 20


def runs_root(output_root: str | os.PathLike[str] | None = None) -> Path:
    """Where project folders go: ``output_root``, else ``$AUTOML_RUNS_DIR``, else ``runs``."""
    return Path(output_root or os.environ.get(RUNS_DIR_ENV) or "runs")


def artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    return f"{prefix}-" + "-".join(filter(None, slug.split("-")))


def source_key(dataset: str, target: str | None = None, task_type: str | None = None) -> str | None:
    """A cheap fingerprint of what :func:`automl.data.load` would return: source bytes, card, overrides.

    Also covers the loading code and the package version; hashes the file instead of
    parsing it. ``None`` (do not cache) when there is no readable file: loading then
    fails with the user's error message, uncached.
    """
    import automl
    import automl.data
    import automl.tables

    digest = hashlib.sha256(json.dumps([automl.__version__, dataset, target, task_type]).encode())
    # The loading code is part of the result: a changed loader must not be served an old pickle.
    for loader in (automl.data, automl.tables):
        digest.update(Path(loader.__file__).read_bytes())
    card = builtin_cards().get(dataset)
    if card is not None:
        digest.update(json.dumps(dataclasses.asdict(card), sort_keys=True, default=str).encode())
        if card.loader:  # a bundled loader (scikit-learn): its data changes only with its package
            package = __import__(card.loader.split(".")[0])
            digest.update(str(getattr(package, "__version__", "")).encode())
            return digest.hexdigest()[:16]
        path = cards_dir() / str(card.file)
    else:
        path = Path(dataset)
    try:
        digest.update(str(path.resolve()).encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()[:16]


def _ingest_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    key = source_key(parameters["dataset"], parameters.get("target"), parameters.get("task_type"))
    return None if key is None else f"automl-ingest-{key}"


def _retry_unless_input_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry reading flaky storage, but not input the user must fix."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return False


def _ingest_run_name() -> str:
    """``ingest-<dataset name or file name>``: a full path makes an unreadable run name."""
    from prefect.runtime import task_run

    return f"ingest-{Path(str(task_run.parameters['dataset'])).name}"


@task(name="ingest", task_run_name=_ingest_run_name, retries=2, retry_delay_seconds=1,
      retry_condition_fn=_retry_unless_input_error, cache_key_fn=_ingest_cache_key,
      cache_expiration=INGEST_CACHE_TTL)
def ingest(dataset: str, target: str | None = None, task_type: str | None = None) -> Dataset:
    """Load and validate a built-in dataset or a file; cached on :func:`source_key`, never on a DataFrame."""
    return load(dataset, target, task_type)


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


@flow(name="automl", task_runner=ThreadPoolTaskRunner(max_workers=2), validate_parameters=True)
def automl_flow(dataset: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run AutoML on a built-in dataset name or a CSV/Parquet path; return the run summary.

    ``options`` are the run's settings by their ``python -m automl.run`` names
    (``max_runtime_secs``, ``max_models``, ``include_algos``, …; see
    :class:`automl.config.RunConfig`). Outputs go to ``output_dir``, else
    ``$AUTOML_RUNS_DIR/<project>``, else ``runs/<project>``.
    """
    # Checked before any data loads; the budget counts from the CLI's start, else from here.
    config = RunConfig.from_options(**{"started_at": time.time(), **(options or {}), "dataset": dataset})
    ds = ingest(dataset, config.target, config.task)
    state = train(config, ds)
    return publish(state)
