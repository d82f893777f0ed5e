"""``automl_flow``: ingest → preprocess → reference models → search → evaluate → ensembles → leaderboard → publish.

Each task wraps one stage method of :class:`automl.AutoML`. Only ingest is cached, keyed
on a fingerprint of the source (file bytes + dataset card + overrides) that is computed
without parsing the table; the later stages hand each other the in-memory run object,
so they are never cached. ``flows/retrain.py`` reuses :func:`ingest` and :func:`train`.
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

from automl.data import Dataset, builtin_cards, cards_dir, load
from automl.errors import InputError
from automl.pipeline import AutoML

__all__ = ["automl_flow", "artifact_key", "ingest", "train", "publish_leaderboard", "runs_root", "source_key",
           "RunProgress", "RUNS_DIR_ENV"]

#: Environment variable naming the folder that holds ``<project>/`` output folders (default ``runs``).
RUNS_DIR_ENV = "AUTOML_RUNS_DIR"
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

    digest = hashlib.sha256(json.dumps([automl.__version__, dataset, target, task_type]).encode())
    # The loading code is part of the result: a changed loader must not be served an old pickle.
    digest.update(Path(automl.data.__file__).read_bytes())
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


@task(name="preprocess", task_run_name="preprocess-{aml.project}", cache_policy=NO_CACHE)
def preprocess(aml: AutoML, data: Dataset | str, target: str | None = None, task_type: str | None = None) -> str:
    """Hand the data to the run (a loaded dataset, or a name or path it loads itself) and prepare it."""
    aml.ingest(data, target, task_type)
    return aml.prepare().task


@task(name="reference-models", task_run_name="reference-models-{aml.project}", cache_policy=NO_CACHE)
def reference_models(aml: AutoML) -> int:
    return len(aml.fit_reference_models())


@task(name="search", task_run_name="search-{aml.project}", cache_policy=NO_CACHE)
def search(aml: AutoML) -> int:
    return len(aml.search())


@task(name="evaluate-search", task_run_name="evaluate-search-{aml.project}", cache_policy=NO_CACHE)
def evaluate_search(aml: AutoML) -> int:
    return len(aml.evaluate_search())


@task(name="ensembles", task_run_name="ensembles-{aml.project}", cache_policy=NO_CACHE)
def ensembles(aml: AutoML) -> int:
    return len(aml.build_ensembles())


@task(name="leaderboard", task_run_name="leaderboard-{aml.project}", cache_policy=NO_CACHE)
def leaderboard(aml: AutoML) -> int:
    return len(aml.finish())


class RunProgress:
    """An :class:`automl.events.EventLog` listener that keeps a Prefect progress artifact current.

    Progress is the share of the time budget spent (the run ends with its budget); the
    description counts finished search trials and echoes the latest event.
    """

    def __init__(self, aml: AutoML, key: str) -> None:
        self.aml, self.trials = aml, 0
        self.artifact_id = create_progress_artifact(0.0, key=key, description="starting")

    def __call__(self, event: dict[str, str]) -> None:
        if event["stage"] == "search" and event["message"].startswith("trial "):
            self.trials += 1
        budget = self.aml.budget
        spent = 0.0 if budget is None else 100.0 * budget.elapsed() / budget.seconds
        # 100 % is kept for the end: a run may spend its whole budget before writing outputs.
        self._update(min(spent, 99.0), f"{self.trials} search trials; [{event['stage']}] {event['message']}")

    def finish(self) -> None:
        self._update(100.0, f"done: {self.trials} search trials")

    def _update(self, progress: float, description: str) -> None:
        update_progress_artifact(self.artifact_id, round(progress, 1), description=description)


def train(aml: AutoML, ds: Dataset, data: Dataset | str | None = None, target: str | None = None,
          task_type: str | None = None) -> None:
    """Every training stage in order, as tasks, with a progress artifact kept current while they run.

    ``ds`` is the loaded dataset; ``data`` (default ``ds``) is what the run ingests.
    """
    progress = RunProgress(aml, artifact_key("progress", ds.card.name))
    aml.events.subscribe(progress)
    try:
        preprocess(aml, ds if data is None else data, target, task_type)
        reference_models(aml)
        search(aml)
        evaluate_search(aml)
        ensembles(aml)
        leaderboard(aml)
    finally:
        aml.events.unsubscribe(progress)
    progress.finish()


def publish_leaderboard(aml: AutoML) -> None:
    """The leaderboard as a table artifact, versioned under ``leaderboard-<dataset>``."""
    name = aml.dataset.card.name
    records = json.loads(aml.leaderboard.to_json(orient="records"))  # plain floats (numpy is rejected); NaN → null
    create_table_artifact(key=artifact_key("leaderboard", name), table=records,
                          description=f"Leaderboard of {name}, sorted by {aml.sort_metric}")


@task(name="publish", task_run_name="publish-{aml.project}", cache_policy=NO_CACHE)
def publish(aml: AutoML) -> dict[str, Any]:
    """Leaderboard table artifact and a markdown summary."""
    board, summary = aml.leaderboard, aml.summary()
    name = aml.dataset.card.name
    publish_leaderboard(aml)
    top = board.iloc[0]
    create_markdown_artifact(
        key=artifact_key("summary", name),
        markdown=(f"# {name}: leader `{top['model_id']}`\n\n"
                  f"- {aml.sort_metric}: **{top[aml.sort_metric]:.4f}** ({aml.nfolds}-fold CV)\n"
                  f"- models ranked: {len(board)}; search trials: {summary['trials']}\n"
                  f"- run time: {summary['elapsed_secs']}s of {summary['max_runtime_secs']}s\n"
                  f"- outputs: `{summary['output_dir']}`\n"
                  f"- report: [report.html]({Path(summary['output_dir']).resolve().as_uri()}/report.html) "
                  f"(leaderboard with intervals, curves, importances; opens offline)\n"),
        description=f"AutoML run summary for {name}")
    return summary


@flow(name="automl", task_runner=ThreadPoolTaskRunner(max_workers=2), validate_parameters=True)
def automl_flow(dataset: str, target: str | None = None, task_type: str | None = None,
                max_runtime_secs: float | None = None, max_models: int | None = None, seed: int = 1, nfolds: int = 5,
                sort_metric: str | None = None, engine: str = "optuna", project: str | None = None,
                output_dir: str | None = None, started_at: float | None = None, verbose: bool | None = None,
                include_algos: list[str] | None = None, exclude_algos: list[str] | None = None,
                leaderboard_frame: str | None = None, tuner: str = "hyperband", distribute: str | None = None,
                workers: int | None = None, storage: str | None = None,
                tensorboard: str | None = None) -> dict[str, Any]:
    """Run AutoML on a built-in dataset name or a CSV/Parquet path; return the run summary.

    Parameters are those of :class:`automl.AutoML`. Outputs go to ``output_dir``, else
    ``$AUTOML_RUNS_DIR/<project>``, else ``runs/<project>``.
    """
    aml = AutoML(max_runtime_secs=max_runtime_secs, max_models=max_models, seed=seed, nfolds=nfolds,
                 sort_metric=sort_metric, engine=engine, project=project, output_dir=output_dir, verbose=verbose,
                 started_at=started_at or time.time(), include_algos=include_algos, exclude_algos=exclude_algos,
                 leaderboard_frame=leaderboard_frame, tuner=tuner, distribute=distribute, workers=workers,
                 storage=storage, tensorboard=tensorboard)  # checks the settings before loading; the budget covers it
    ds = ingest(dataset, target, task_type)
    aml.project = project or ds.card.name
    aml.output_dir = aml.output_dir or runs_root() / aml.project
    # Search worker processes reload the data by name or path; handed a Dataset object they
    # would get a bare copy of its table, without the card's column rules or images.
    train(aml, ds, ds if aml.workers == 1 else dataset, target, task_type)
    return publish(aml)
