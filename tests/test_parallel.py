"""Parallel search: worker processes on one study (PostgreSQL or the journal file), heartbeats, limits.

Real processes, a real PostgreSQL server and real Keras training on tiny budgets. The
PostgreSQL tests run in CI (``CI=true``); elsewhere they skip when no server answers.
Set ``AUTOML_TEST_POSTGRES`` to use another server than the local ``test`` database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import FrozenTrial, TrialState

from automl import search, worker_files
from automl.budget import Budget
from automl.config import RunConfig
from automl.engines import SearchJob, StopPolicy
from automl.engines.optuna_engine import DEFAULT_POLICY, StudyStop, WorkerPolicy
from automl.engines.optuna_engine.pool import Pool
from automl.events import EventLog
from automl.metrics import get
from automl.pipeline import AutoML
from automl.spaces import FAMILIES
from automl.state import start
from conftest import REPO, kill_group, run_module, subprocess_env, wait_for

MLP_SPACE = FAMILIES["mlp"][0]


def _only_study(storage: Any, project: str) -> optuna.Study:
    names = [n for n in optuna.study.get_all_study_names(storage) if n.startswith(f"{project}-")]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)


def _owner_pid(trial: FrozenTrial) -> int | None:
    """The process id in the trial's ``worker`` attribute (``host:pid``), if it ran on this machine."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _job(max_models: int | None, keep_share: float) -> SearchJob:
    """A search job that only the stop rule reads."""
    return SearchJob(RunConfig.from_options(max_models=max_models), MLP_SPACE, (), get("auc", "binary"), "s",
                     Path("."), 100, StopPolicy(0, 0, keep_share))


def _check_shared_study(study: optuna.Study, out: Path) -> None:
    """No duplicate numbers, trials from two worker processes, every finished trial in trials.csv."""
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {sorted(numbers)}"
    finished = [t for t in trials if t.state.is_finished()]
    pids = {_owner_pid(t) for t in finished} - {None}
    assert len(pids) >= 2, f"finished trials ran in {len(pids)} worker process(es) only: {pids}"
    assert os.getpid() not in pids, "trials ran in the supervising process, not in workers"
    csv = pd.read_csv(out / "trials.csv")
    assert csv["number"].is_unique
    # Distinct sampler seeds per worker, the constant-liar TPE and the duplicate check: no configuration twice.
    ran = csv[~csv["error"].fillna("").str.startswith("interrupted")]
    assert ran["params"].is_unique, ran[ran["params"].duplicated(keep=False)][["number", "params"]]
    assert dict(zip(csv["number"], csv["state"], strict=True)) == {t.number: t.state.name for t in finished}
    board = pd.read_csv(out / "leaderboard.csv")
    assert "MLP" in set(board["algo"]), "no network from the workers' trials reached the leaderboard"


def test_two_workers_share_one_postgresql_study(pg_url: str, project: str, tmp_path: Path) -> None:
    frame = pd.read_csv(REPO / "datasets" / "diabetes.csv")  # a DataFrame: workers read the copy in search/
    aml = AutoML(max_runtime_secs=80, workers=2, storage=pg_url, include_algos=["GLM", "MLP"], project=project,
                 output_dir=tmp_path / "out", verbose=False)
    aml.fit(frame, target="Outcome")
    assert not (tmp_path / "out" / "search" / "study.journal").exists(), "the journal was used, not PostgreSQL"
    _check_shared_study(_only_study(pg_url, project), tmp_path / "out")


def test_two_workers_share_the_default_journal(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 80 s: at 60 s on 2 cores the best network's 5-fold refit was sometimes cut at the deadline and dropped.
    aml = AutoML(max_runtime_secs=80, workers=2, include_algos=["GLM", "MLP"], project="journal", output_dir=out,
                 verbose=False)
    aml.fit("diabetes")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(out / "search" / "study.journal")))
    _check_shared_study(_only_study(journal, "journal"), out)


def test_a_killed_workers_trial_is_retried_through_heartbeats(pg_url: str, project: str, tmp_path: Path) -> None:
    # The pipeline creates the study and the spec that workers rebuild the data from; no trials yet.
    config = RunConfig.from_options(max_runtime_secs=900, max_models=0, workers=2, storage=pg_url,
                                    include_algos=["MLP"], project=project, output_dir=str(tmp_path / "out"),
                                    verbose=False)
    state = start(config, "diabetes")
    search.start_workers(state)
    assert search.join_search(state) == []
    study = _only_study(pg_url, project)
    # Give the unsupervised workers more trials than they will run: the test stops them. Rounds of 4 members
    # (this project's own heartbeats, one thread for a round's trials) keep a round, and so a retry, short.
    spec = study.user_attrs["spec"]
    more = RunConfig.from_json(spec["config"]).replace(max_models=1000, population=4)
    study.set_user_attr("spec", {**spec, "config": more.to_json()})

    logs: list[Any] = []

    def start_worker() -> subprocess.Popen:
        logs.append(open(tmp_path / f"worker-{len(logs)}.log", "w"))  # noqa: SIM115 - closed in the finally
        return subprocess.Popen([sys.executable, "-m", "automl.worker", "--study", study.study_name,
                                 "--storage", pg_url, "--threads", "1"], cwd=tmp_path, env=subprocess_env(),
                                stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True)

    def running_trial_of(proc: subprocess.Popen) -> FrozenTrial | None:
        """A trial ``proc`` is training (its parameters are drawn), if any."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _owner_pid(trial) == proc.pid and len(trial.params) == len(MLP_SPACE):
                return trial
        return None

    survivor = start_worker()
    procs = [survivor]
    try:
        victim: FrozenTrial | None = None
        for _ in range(5):  # a trial takes about a second: the kill may land just after it ended
            doomed = start_worker()
            procs.append(doomed)
            target = wait_for("a trial of the worker to kill", lambda d=doomed: running_trial_of(d), 240,
                               lambda d=doomed: d.poll() is None and survivor.poll() is None)
            kill_group(doomed)
            target = next(t for t in study.get_trials(deepcopy=False) if t.number == target.number)
            if target.state == TrialState.RUNNING:
                victim = target
                break
        assert victim is not None, "could not kill a worker in the middle of a trial in 5 attempts"

        def retry() -> FrozenTrial | None:
            for trial in study.get_trials(deepcopy=False):
                if trial.system_attrs.get("failed_trial") == victim.number and trial.state.is_finished():
                    return trial
            return None

        # The survivor fails the trial once it misses heartbeats for GRACE_SECONDS, and runs it again.
        retried = wait_for(f"the retry of trial {victim.number}", retry, 6 * DEFAULT_POLICY.grace_seconds + 120,
                            lambda: survivor.poll() is None)
    finally:
        for proc in procs:
            kill_group(proc)
        for log in logs:
            log.close()

    trials = study.get_trials(deepcopy=False)
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    assert retried.state in (TrialState.COMPLETE, TrialState.PRUNED), retried.user_attrs.get("error")
    assert retried.params == victim.params
    assert _owner_pid(retried) == survivor.pid
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    # The killed trial is not a result: --max-models does not count it (its retry counts once).
    finished = [t for t in trials if t.state.is_finished()]
    lost = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    assert victim.number in lost
    counted = len(finished) - len(lost)

    def stop(max_trials: int) -> str | None:
        return StudyStop(Budget(600), _job(max_trials, keep_share=0)).reason(trials)

    assert stop(counted) == f"{counted} trials done"
    assert stop(counted + 1) is None


def test_keras_tuner_refuses_several_workers(tmp_path: Path) -> None:
    proc = run_module("automl.run", "diabetes", "--engine", "keras-tuner", "--workers", "2", cwd=tmp_path,
                      timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--workers" in lines[0], proc.stderr
    assert "keras-tuner" in lines[0]
    assert not list(tmp_path.iterdir()), "a refused run wrote files"


def test_the_stop_rule_looks_ahead_for_replacement_workers() -> None:
    # A recycled worker is replaced only if a new one would be ready before the search ends.
    stop = StudyStop(Budget(100), _job(None, keep_share=0.3))
    assert stop.reason([]) is None
    assert stop.reason([], ahead=50) is None
    assert stop.reason([], ahead=80) == "time budget"  # 20 s would be left: less than the 30 % kept


def test_local_workers_memory_map_the_search_split_the_run_wrote(tmp_path: Path) -> None:
    config = RunConfig.from_options(max_runtime_secs=900, workers=2, include_algos=["MLP"],
                                    output_dir=str(tmp_path / "out"), verbose=False)
    state = start(config, "diabetes")
    job = search.search_job(state, with_spec=True)
    loaded, data = worker_files.load_worker_files(Path(job.spec["local"]))
    expected = search.search_data(state)
    for name in worker_files.ARRAYS:
        assert isinstance(getattr(data, name), np.memmap), name  # shared pages, not a copy per worker
        np.testing.assert_array_equal(getattr(data, name), getattr(expected, name))
    assert (loaded.identity, loaded.study_name, loaded.metric.name) == (job.identity, job.study_name, "auc")
    # The spec is written once per run: the search stage reuses the files start_workers wrote.
    assert search.search_job(state, with_spec=True).spec["local"] == job.spec["local"]


def test_worker_start_up_is_read_from_its_first_trial_not_from_when_the_supervisor_looks(tmp_path: Path) -> None:
    # Workers start while the reference models train; the supervisor first looks minutes later. A start-up
    # measured at that first look (330 s on 1M rows) kept recycled workers from being replaced.
    job = replace(_job(None, keep_share=0.3), storage_dir=tmp_path)
    pool = Pool(None, job, EventLog(verbose=False))
    began = datetime.now() - timedelta(minutes=5)
    pool.started = {4242: began}
    trial = SimpleNamespace(user_attrs={"worker": f"{socket.gethostname()}:4242"},
                            datetime_start=began + timedelta(seconds=9))
    pool._note_startup([trial])
    assert pool.startup == pytest.approx(9.0)
    assert pool.started == {}


def test_a_worker_joining_by_project_skips_the_runs_gbm_search(tmp_path: Path) -> None:
    """``python -m automl.worker --project P`` joins the newest study it can work on: the run's GBM search
    (``<study>-gbm``, opened after the network search and run by the run alone) carries no spec."""
    from automl.engines.optuna_engine import open_storage
    from automl.worker import _newest_study

    storage = open_storage(None, tmp_path)
    networks = optuna.create_study(study_name="proj-abc", storage=storage)
    networks.set_user_attr("spec", {"config": "{}"})
    networks.enqueue_trial({"x": 1.0})
    networks.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    boosting = optuna.create_study(study_name="proj-abc-gbm", storage=storage)
    boosting.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert _newest_study(None, tmp_path, "proj") == "proj-abc"


@contextmanager
def _early_workers(tmp_path: Path) -> Iterator[Pool]:
    """Two workers of a diabetes search started as ``search.start_workers`` does, recycling sooner (the first after
    one trial); killed at the end."""
    from automl.engines import optuna_engine

    config = RunConfig.from_options(max_runtime_secs=900, workers=2, include_algos=["MLP"],
                                    output_dir=str(tmp_path / "out"), verbose=False)
    state = start(config, "diabetes")
    pool = optuna_engine.start(search.search_job(state, with_spec=True), state.budget, state.events,
                               WorkerPolicy(trials_per_process=2))
    try:
        yield pool
    finally:
        pool._supervised.set()
        pool._keeper.join()
        for proc in pool.procs.values():
            proc.kill()


def _ran_in(pool: Pool) -> set[int]:
    """The process ids of the pool's finished trials."""
    return {_owner_pid(t) for t in pool.study.get_trials(deepcopy=False) if t.state.is_finished()} - {None}


def test_workers_that_recycle_before_the_search_stage_are_replaced(tmp_path: Path) -> None:
    """Workers start while the reference models and the GBM search train, minutes before the search stage
    supervises them; one that recycled meanwhile had stayed gone (Pima at 120 s: no network from 40 s to 70 s)."""
    with _early_workers(tmp_path) as pool:
        # A third worker process ran trials: the keep-alive thread replaced the recycled one, unsupervised.
        wait_for("a replacement worker's trial", lambda: len(_ran_in(pool)) >= 3, timeout=180, alive=lambda: True)


def test_workers_warmed_up_at_the_runs_start_take_the_search_and_the_others_end(tmp_path: Path) -> None:
    """Worker processes started before the study exists (TensorFlow imported meanwhile) are the ones the pool
    runs once it opens: their trials carry their process ids and their output goes to the pool's logs. A warm
    worker no search takes ends: when discarded, or when the run's process closes its input (it ended)."""
    from automl import warm

    warm.warm_up(2)
    warmed = [p.pid for p in warm._warm]
    with _early_workers(tmp_path) as pool:
        assert sorted(p.pid for p in pool.procs.values()) == sorted(warmed) and not warm._warm
        wait_for("a trial of each warm worker", lambda: set(warmed) <= _ran_in(pool), timeout=180,
                 alive=lambda: True)
        assert "worker 0: Placement" in (pool.logs / "worker-0.log").read_text()
    warm.warm_up(2)
    first, second = warm._warm
    warm._warm.remove(second)
    second.stdin.close()  # what the end of the run's process does to a warm worker's input
    assert second.wait(timeout=120) == 0
    warm.discard()
    assert first.poll() is not None and not warm._warm
