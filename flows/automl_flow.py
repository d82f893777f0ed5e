"""``automl_flow``: ingest → preprocess → reference models → search → evaluate → leaderboard → publish.

Each task wraps one stage method of :class:`automl.AutoML`. Stages hand each other
the in-memory run object, so these tasks are never cached; caching keyed on dataset
fingerprints belongs to ingest-only flows.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from automl.errors import InputError
from automl.pipeline import AutoML

__all__ = ["automl_flow", "artifact_key"]


def _retry_unless_input_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry reading flaky storage, but not input the user must fix."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return False


def artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    return f"{prefix}-" + "-".join(filter(None, slug.split("-")))


@task(name="ingest", retries=2, retry_delay_seconds=1, retry_condition_fn=_retry_unless_input_error,
      cache_policy=NO_CACHE)
def ingest(aml: AutoML, dataset: str, target: str | None, task_type: str | None) -> str:
    return aml.ingest(dataset, target, task_type).fingerprint


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess(aml: AutoML) -> str:
    return aml.prepare().task


@task(name="reference-models", cache_policy=NO_CACHE)
def reference_models(aml: AutoML) -> int:
    return len(aml.fit_reference_models())


@task(name="search", cache_policy=NO_CACHE)
def search(aml: AutoML) -> int:
    return len(aml.search())


@task(name="evaluate-search", cache_policy=NO_CACHE)
def evaluate_search(aml: AutoML) -> int:
    return len(aml.evaluate_search())


@task(name="leaderboard", cache_policy=NO_CACHE)
def leaderboard(aml: AutoML) -> int:
    return len(aml.finish())


@task(name="publish", cache_policy=NO_CACHE)
def publish(aml: AutoML) -> dict[str, Any]:
    """Leaderboard table artifact (versioned per dataset key) and a markdown summary."""
    board, summary = aml.leaderboard, aml.summary()
    name = aml.dataset.card.name
    records = json.loads(board.to_json(orient="records"))  # plain floats; NaN → null
    create_table_artifact(key=artifact_key("leaderboard", name), table=records,
                          description=f"Leaderboard of {name}, sorted by {aml.sort_metric}")
    top = board.iloc[0]
    create_markdown_artifact(
        key=artifact_key("summary", name),
        markdown=(f"# {name}: leader `{top['model_id']}`\n\n"
                  f"- {aml.sort_metric}: **{top[aml.sort_metric]:.4f}** ({aml.nfolds}-fold CV)\n"
                  f"- models ranked: {len(board)}; search trials: {summary['trials']}\n"
                  f"- run time: {summary['elapsed_secs']}s of {summary['max_runtime_secs']}s\n"
                  f"- outputs: `{summary['output_dir']}`\n"),
        description=f"AutoML run summary for {name}")
    return summary


@flow(name="automl", task_runner=ThreadPoolTaskRunner(max_workers=2), validate_parameters=True)
def automl_flow(dataset: str, target: str | None = None, task_type: str | None = None,
                max_runtime_secs: float = 120.0, max_models: int | None = None, seed: int = 1, nfolds: int = 5,
                sort_metric: str | None = None, engine: str = "optuna", project: str | None = None,
                output_dir: str | None = None, started_at: float | None = None,
                verbose: bool | None = None) -> dict[str, Any]:
    """Run AutoML on a built-in dataset name or a CSV/Parquet path; return the run summary."""
    aml = AutoML(max_runtime_secs=max_runtime_secs, max_models=max_models, seed=seed, nfolds=nfolds,
                 sort_metric=sort_metric, engine=engine, project=project, output_dir=output_dir,
                 verbose=verbose, started_at=started_at)
    ingest(aml, dataset, target, task_type)
    preprocess(aml)
    reference_models(aml)
    search(aml)
    evaluate_search(aml)
    leaderboard(aml)
    return publish(aml)
