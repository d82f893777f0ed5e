"""flows/automl_flow.py: the ingest cache key, cached ingest and its retry rule, the progress listener.

Prefect is imported inside the tests, after the ``prefect_api`` fixture has set the API
URL: Prefect reads its settings once, at import.
"""

from __future__ import annotations

import shutil

import pytest

from automl.events import EventLog
from conftest import REPO, prefect_server

# Prefect reads its settings once, at import: start the server (and set PREFECT_API_URL) before any
# test here imports it, so that later in-process tests of the session talk to that server too.
pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def on_server(prefect_api):
    with prefect_server(prefect_api) as url:
        yield url


def test_source_key_follows_the_file_and_the_overrides(tmp_path):
    from flows.automl_flow import source_key

    data = tmp_path / "pima.csv"
    shutil.copy(REPO / "datasets" / "diabetes.csv", data)
    key = source_key(str(data), "Outcome")
    assert key == source_key(str(data), "Outcome")
    assert source_key(str(data), "Outcome", "binary") != key
    assert source_key(str(data), "Glucose") != key
    with data.open("a") as fh:
        fh.write("1,90,60,20,80,25.0,0.3,30,0\n")
    assert source_key(str(data), "Outcome") != key
    assert source_key(str(tmp_path / "missing.csv"), "Outcome") is None  # loading will fail: nothing to cache
    assert source_key("diabetes") != source_key("titanic")


def test_runs_root_precedence(monkeypatch, tmp_path):
    from flows.automl_flow import RUNS_DIR_ENV, runs_root

    monkeypatch.delenv(RUNS_DIR_ENV, raising=False)
    assert str(runs_root()) == "runs"
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path))
    assert runs_root() == tmp_path
    assert runs_root(tmp_path / "x") == tmp_path / "x"


def test_event_listeners_see_every_event_and_cannot_break_the_log():
    seen: list[dict[str, str]] = []

    def broken(event: dict[str, str]) -> None:
        raise ConnectionError("the UI is down")

    log = EventLog(verbose=False)
    log.subscribe(broken)
    log.subscribe(seen.append)
    log.add("search", "trial 0 complete")
    log.warn("search", "trial 1 failed")
    assert [e["message"] for e in seen] == ["trial 0 complete", "trial 1 failed"]
    assert seen[1]["level"] == "WARNING" and seen[1]["stage"] == "search"
    log.unsubscribe(seen.append)
    log.add("evaluate", "after unsubscribe")
    assert len(seen) == 2 and len(log.rows) == 3


def test_ingest_is_cached_on_the_source_and_bad_input_is_not_retried(on_server, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from automl.errors import InputError
    from flows.automl_flow import ingest

    data = tmp_path / "pima.csv"
    shutil.copy(REPO / "datasets" / "diabetes.csv", data)

    @flow
    def load_twice(path: str) -> list:
        return [ingest(path, "Outcome", None, return_state=True) for _ in range(2)]

    first, second = load_twice(str(data))
    assert (first.name, second.name) == ("Completed", "Cached")
    assert first.result().fingerprint == second.result().fingerprint
    assert len(second.result().frame) == 768
    with data.open("a") as fh:  # new content, new key: loaded again, not served stale
        fh.write("1,90,60,20,80,25.0,0.3,30,0\n")
    changed, _ = load_twice(str(data))
    assert changed.name == "Completed" and len(changed.result().frame) == 769

    @flow
    def load_missing(path: str) -> dict:
        state = ingest(path, "Outcome", None, return_state=True)
        try:
            state.result()
        except InputError as exc:
            return {"failed": state.is_failed(), "error": str(exc), "task_run_id": state.state_details.task_run_id}
        return {"failed": state.is_failed()}

    missing = load_missing(str(tmp_path / "missing.csv"))
    assert missing["failed"] and missing["error"].endswith("missing.csv: file not found; check the path")
    with get_client(sync_client=True) as client:
        task_run = client.read_task_run(missing["task_run_id"])
    assert task_run.run_count == 1  # input the user must fix is not retried
    assert task_run.name == "ingest-missing.csv"


def test_progress_artifact_follows_the_event_log(on_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    from automl.budget import Budget
    from automl.events import EventLog
    from flows.automl_flow import RunProgress

    def read(artifact_id):
        with get_client(sync_client=True) as client:
            return client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))[0]

    @flow
    def progress_flow() -> list:
        events = EventLog(verbose=False)
        progress = RunProgress(Budget(60), "progress-flows-test")
        events.subscribe(progress)
        events.add("search", "trial 0 complete auc=0.8000")
        events.add("search", "trial 1 pruned")
        middle = read(progress.artifact_id)
        progress.finish()
        return [middle, read(progress.artifact_id)]

    middle, done = progress_flow()
    assert middle.type == "progress" and middle.key == "progress-flows-test"
    assert 0 <= float(middle.data) < 100
    assert middle.description.startswith("2 search trials; [search] trial 1 pruned")
    assert float(done.data) == 100 and done.description.startswith("done: 2 search trials")
