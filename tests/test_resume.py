"""Resume and kill -9: a killed search loses no completed trial, and rerunning it finishes the study.

The real CLI in a process group of its own (so that the test can SIGKILL all of it), the
default journal storage, real training on tiny budgets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO, Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from automl import load_model
from conftest import kill_group, run_module, subprocess_env, wait_for


def _start(args: tuple[Any, ...], cwd: Path, log: IO[str]) -> subprocess.Popen:
    """``python -m automl.run args`` in a new session: ``os.killpg`` stops it with every child."""
    return subprocess.Popen([sys.executable, "-m", "automl.run", *map(str, args)], cwd=cwd,
                            env=subprocess_env(CI="true"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _study(out: Path) -> optuna.Study | None:
    """The run's study, read from its journal file; None before the search created it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = out / "search" / "study.journal"
    if not path.exists():
        return None
    storage = JournalStorage(JournalFileBackend(str(path)))
    names = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=names[0], storage=storage) if names else None


def _trials(out: Path) -> list[FrozenTrial]:
    study = _study(out)
    return [] if study is None else study.get_trials(deepcopy=False)


def _counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Finished trials that are results: not interrupted, not surplus, not a skipped repeat of an earlier
    configuration (the rule of ``automl.engines.stop.StopRule.reason``)."""
    return [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")
            and not t.user_attrs.get("surplus") and "duplicate_of" not in t.user_attrs]


def _check_outputs_whole(out: Path, trials: list[FrozenTrial]) -> None:
    """trials.csv lists every finished trial that ran (a surplus trial never trains); every leaderboard
    model loads; no temporary file is left."""
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {sorted(numbers)}"
    csv = pd.read_csv(out / "trials.csv")
    assert csv["number"].is_unique
    assert dict(zip(csv["number"], csv["state"], strict=True)) == {
        t.number: t.state.name for t in trials if t.state.is_finished() and not t.user_attrs.get("surplus")
        and "duplicate_of" not in t.user_attrs}
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) >= 2 and board["model_id"].is_unique
    assert {p.name for p in (out / "models").iterdir() if not p.name.startswith(".")} == set(board["model_id"])
    for model_id in board["model_id"]:
        assert load_model(out / "models" / model_id).model_id == model_id
    assert json.loads((out / "leader" / "model.json").read_text())["model_id"] == board["model_id"].iloc[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"


def test_sigkill_mid_search_then_rerun_finishes_the_study(prefect_api: str, tmp_path: Path) -> None:
    out, project = tmp_path / "out", f"resume-{uuid.uuid4().hex[:8]}"
    args = ("diabetes", "--max-models", 8, "--workers", 1, "--max-runtime-secs", 120,
            "--include-algos", "GLM,MLP", "--nfolds", 3, "--output", out, "--project", project)
    log = tmp_path / "first.log"
    with log.open("w") as fh:
        first = _start(args, tmp_path, fh)
        try:
            wait_for("2 finished trials", lambda: len(_counted(_trials(out))) >= 2, 240, lambda: first.poll() is None,
                     log)
        finally:
            kill_group(first)
    before = {t.number: t for t in _trials(out)}
    assert len(_counted(list(before.values()))) < 8, "the first run finished its search before the kill"
    interrupted = [n for n, t in before.items() if t.state == TrialState.RUNNING]

    again = run_module("automl.run", *args, cwd=tmp_path, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = _trials(out)
    by_number = {t.number: t for t in trials}
    # --max-models counts the study's results, the first run's included: exactly 8 (one worker).
    assert len(_counted(trials)) == 8
    for number, old in before.items():  # the first run's finished trials are kept as they were
        if old.state.is_finished():
            assert (by_number[number].state, by_number[number].value) == (old.state, old.value)
    for number in interrupted:  # a trial the kill cut short is failed, marked, and run again
        assert by_number[number].state == TrialState.FAIL
        assert by_number[number].user_attrs.get("interrupted") is True
        retries = [t for t in trials if t.user_attrs.get("retry_of") == number]
        assert len(retries) == 1 and retries[0].state.is_finished()
        # Its parameters are drawn again as they were (those drawn before the kill, if it came mid-draw).
        assert before[number].params.items() <= retries[0].params.items()
    assert not [t for t in trials if not t.state.is_finished()], "trials left running or waiting"
    events = pd.read_csv(out / "event_log.csv")
    assert events["message"].str.contains("resuming study").any()
    _check_outputs_whole(out, trials)


def _child_pid(trial: FrozenTrial, parent: int) -> int | None:
    """The pid of the trial's worker (``host:pid``) when it is a child of ``parent`` on this machine."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(pid) if int(stat.rpartition(")")[2].split()[1]) == parent else None


def test_sigkill_of_a_worker_loses_no_completed_trial(prefect_api: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("diabetes", "--max-models", 10, "--workers", 2, "--max-runtime-secs", 150, "--include-algos", "GLM,MLP",
            "--nfolds", 3, "--output", out, "--project", f"kill-worker-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "run.log"
    with log.open("w") as fh:
        run = _start(args, tmp_path, fh)
        try:
            victim = None
            for _ in range(5):  # a trial takes about a second: the kill may land just after it ended
                def running() -> tuple[FrozenTrial, int] | None:
                    trials = _trials(out)
                    if not any(t.state == TrialState.COMPLETE for t in trials):
                        return None  # kill once something is completed, to show that it survives
                    for t in trials:
                        pid = _child_pid(t, run.pid) if t.state == TrialState.RUNNING and t.params else None
                        if pid is not None:
                            return t, pid
                    return None

                target, pid = wait_for("a running trial in a worker", running, 240, lambda: run.poll() is None, log)
                os.kill(pid, signal.SIGKILL)
                snapshot = {t.number: t for t in _trials(out)}
                if snapshot[target.number].state == TrialState.RUNNING:
                    victim = target
                    break
            assert victim is not None, "could not kill a worker in the middle of a trial in 5 attempts"
            run.wait(timeout=400)
        finally:
            kill_group(run)
    assert run.returncode == 0, log.read_text()[-3000:]

    trials = _trials(out)
    by_number = {t.number: t for t in trials}
    for number, old in snapshot.items():  # nothing completed before the kill is lost or changed
        if old.state.is_finished():
            assert (by_number[number].state, by_number[number].value) == (old.state, old.value)
    killed = by_number[victim.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs.get("interrupted") is True
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state.is_finished()
    assert victim.params.items() <= retries[0].params.items()
    # The retried trial keeps its early place in the queue, so it may run beside the last slot: at most one more.
    assert 10 <= len(_counted(trials)) <= 11
    _check_outputs_whole(out, trials)
