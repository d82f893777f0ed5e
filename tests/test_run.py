"""End to end: the real CLI in a subprocess, the real flow on a real Prefect server, real training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from automl.metrics import metrics_for
from conftest import REPO, run_module


def _read_run(out):
    board = pd.read_csv(out / "leaderboard.csv")
    summary = json.loads((out / "run.json").read_text())
    return board, summary


def _check_outputs(out, board: pd.DataFrame, task: str, sort_metric: str) -> None:
    others = [m.name for m in metrics_for(task) if m.name != sort_metric]
    assert list(board.columns) == ["model_id", sort_metric, f"{sort_metric}_ci_low", f"{sort_metric}_ci_high",
                                   "indistinguishable_from_leader", *others, "training_time_ms",
                                   "predict_time_per_row_ms", "algo", "hyperparameters"]
    assert (board[f"{sort_metric}_ci_low"] <= board[sort_metric]).all()
    assert (board[sort_metric] <= board[f"{sort_metric}_ci_high"]).all()
    assert bool(board["indistinguishable_from_leader"].iloc[0])
    for model_id in board["model_id"]:
        card = json.loads((out / "models" / model_id / "model.json").read_text())
        assert card["model_id"] == model_id and card["task"] == task
    assert json.loads((out / "leader" / "model.json").read_text())["model_id"] == board["model_id"].iloc[0]
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) >= 1 and set(trials["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}
    events = pd.read_csv(out / "event_log.csv")
    assert list(events.columns) == ["timestamp", "level", "stage", "message"]
    assert {"ingest", "preprocess", "reference", "search", "leaderboard"} <= set(events["stage"])
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_diabetes_end_to_end(prefect_api, tmp_path):
    budget = 60  # two worker processes pay ~10 s each for TensorFlow before their first trial
    out = tmp_path / "out"
    proc = run_module("automl.run", "diabetes", "--max-runtime-secs", budget, "--output", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board, summary = _read_run(out)
    _check_outputs(out, board, "binary", "auc")
    assert {"GLM", "DRF", "GBM", "MLP"} <= set(board["algo"])
    assert board["auc"].is_monotonic_decreasing
    assert board["auc"].iloc[0] >= 0.8  # the leader beats a weak model by far on Pima
    # The budget is the run's, start-up included (its wall time is measured in bench/e2e.py, not asserted here).
    assert summary["max_runtime_secs"] == budget and summary["elapsed_secs"] > 0
    assert summary["evaluation"]["protocol"] == "cv" and summary["evaluation"]["nfolds"] == 5
    # TensorFlow's C++ start-up lines (absl, CUDA stubs) read as errors; they stay off the user's terminal.
    assert "absl::InitializeLog" not in proc.stderr and "cuda drivers" not in proc.stderr
    assert "retracing" not in proc.stderr

    from prefect.client.orchestration import get_client

    async def latest_artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    import asyncio

    artifacts = {a.key: a for a in asyncio.run(latest_artifact())}
    table = artifacts["leaderboard-diabetes"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["model_id"] for r in rows] == list(board["model_id"])
    assert "summary-diabetes" in artifacts


def test_titanic_csv_with_target(prefect_api, tmp_path):
    out = tmp_path / "out"
    # Without the forests: at 40 s on 2 busy cores they left the first network 5 s for its 5 folds (no MLP row).
    proc = run_module("automl.run", REPO / "datasets" / "titanic.csv", "--target", "Survived",
                      "--max-runtime-secs", 40, "--max-models", 4, "--exclude-algos", "DRF,XRT", "--output", out,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board, summary = _read_run(out)
    _check_outputs(out, board, "binary", "auc")
    assert "MLP" in set(board["algo"])
    schema = json.loads((out / "leader" / "model.json").read_text())["schema"]
    assert {"Sex", "Embarked"} <= set(schema["categorical"])
    assert {"PassengerId", "Name", "Ticket"} <= set(schema["dropped"]) and schema["filled"] == ["Cabin"]
    trials = pd.read_csv(out / "trials.csv")
    # --max-models bounds each searched family's trials: the networks' and gradient boosting's.
    assert set(trials["family"]) <= {"mlp", "gbm"} and trials["family"].value_counts().max() <= 4


def test_regression_builtin_sorted_ascending(prefect_api, tmp_path):
    out = tmp_path / "out"
    # 45 s: at 35 s on 2 cores the search got one trial and its 5-fold refit hit the deadline (no MLP row).
    proc = run_module("automl.run", "diabetes-progression", "--max-runtime-secs", 45, "--output", out,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board, _ = _read_run(out)
    _check_outputs(out, board, "regression", "mean_residual_deviance")
    assert board["mean_residual_deviance"].is_monotonic_increasing
    assert "MLP" in set(board["algo"])


def test_help_is_complete_and_does_not_import_tensorflow(tmp_path):
    proc = run_module("automl.run", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--target", "--max-runtime-secs", "--max-models", "--engine", "--seed", "--project",
                   "--output", "--sort-metric"):
        assert option in proc.stdout
    probe = "import sys, automl, automl.run; automl.run.build_parser(); print('tensorflow' in sys.modules)"
    import subprocess

    from conftest import subprocess_env

    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("metric", ["logloss"])
def test_sort_metric_option(prefect_api, tmp_path, metric):
    out = tmp_path / "out"
    proc = run_module("automl.run", "diabetes", "--max-runtime-secs", 25, "--max-models", 2, "--sort-metric",
                      metric, "--output", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = pd.read_csv(out / "leaderboard.csv")
    assert board.columns[1] == metric
    assert board[metric].is_monotonic_increasing


def test_the_temporary_server_migrates_a_new_home_once_and_stops_with_the_run(tmp_path, monkeypatch):
    """No server configured: a first run's server creates its database (slow start: TensorFlow's import is
    overlapped), a later run's reuses it; either answers its health check and stops with the run."""
    from flows.server import ApiStartup, _healthy

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    for first_run in (True, False):
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        api = ApiStartup().begin()
        try:
            assert api.slow_start is first_run and api.kind.startswith("temporary server")
            api.wait()
            assert _healthy(api.kind.split()[-1], timeout=5.0)
        finally:
            api.stop()
        assert not _healthy(api.kind.split()[-1], timeout=1.0)
    assert (tmp_path / "home" / "prefect.db").is_file()


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user cannot write in: root writes through permissions, but not into /proc."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("where", ["a-file", "below-a-file", "unwritable"])
def test_an_output_that_cannot_be_written_is_refused_before_the_run(tmp_path, where):
    # Once found at the first write, which may be the end of the run; now before the Prefect server starts.
    existing = tmp_path / "results.csv"
    existing.write_text("keep me\n")
    output = {"a-file": existing, "below-a-file": existing / "run",
              "unwritable": _unwritable_folder(tmp_path) / "run"}[where]
    proc = run_module("automl.run", "diabetes", "--max-runtime-secs", 10, "--output", output, cwd=tmp_path,
                      timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: --output {output}: ") and "choose another --output" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert existing.read_text() == "keep me\n"
    assert not output.exists() or output == existing
    assert not list(tmp_path.glob("**/.automl-probe-*"))
