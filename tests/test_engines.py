"""The Optuna engine: failed trials are recorded and the search goes on; limits and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest

from automl import data
from automl.budget import Budget
from automl.config import RunConfig
from automl.engines import SearchData, SearchJob, StopPolicy
from automl.engines.optuna_engine import open_study, search
from automl.errors import InputError
from automl.evaluation import holdout_split
from automl.events import EventLog
from automl.metrics import get
from automl.preprocess import encode_target, infer_schema, make_preprocessor
from automl.spaces import Choice, Float, Int


def _search_data() -> SearchData:
    ds = data.load("diabetes")
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    train, val = holdout_split(y, "binary", 0.2, seed=0)
    pre = make_preprocessor(schema).fit(x.iloc[train])
    return SearchData(pre.transform(x.iloc[train]).astype("float32"), y[train],
                      pre.transform(x.iloc[val]).astype("float32"), y[val], "binary", 2)


# A tiny space in which half the activations do not exist: those trials must fail cleanly.
SPACE = (Int("n_layers", 1, 1), Choice("units", (8,)), Choice("activation", ("relu", "no-such-activation")),
         Float("dropout", 0.0, 0.0), Choice("batch_norm", (False,)), Float("l2", 1e-5, 1e-5),
         Float("learning_rate", 1e-3, 1e-2), Choice("optimizer", ("adam",)), Choice("batch_size", (64,)))
IDENTITY = {"task": "binary", "sort_metric": "auc", "direction": "maximize", "seed": 3, "protocol": "cv",
            "nfolds": 5, "family": "mlp", "space": "test"}


def _job(tmp_path, max_trials: int | None, warm=(), space=SPACE, name: str = "t", **identity) -> SearchJob:
    config = RunConfig.from_options(max_models=max_trials, seed=3, workers=1)
    return SearchJob(config, space, warm, get("auc", "binary"), name, Path(tmp_path), 10, StopPolicy(0, 0, 0.0),
                     IDENTITY | identity)


def _run(tmp_path, max_trials: int, warm=(), **identity):
    return search(_job(tmp_path, max_trials, warm, **identity), _search_data(), Budget(120), EventLog(verbose=False))


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path):
    bad = {"n_layers": 1, "units": 8, "activation": "no-such-activation", "dropout": 0.0, "batch_norm": False,
           "l2": 1e-5, "learning_rate": 1e-2, "optimizer": "adam", "batch_size": 64}
    records = _run(tmp_path, max_trials=4, warm=(bad, dict(bad, activation="relu")))
    assert len(records) == 4
    failed = [r for r in records if r.state == "FAIL"]
    assert failed and all("no-such-activation" in r.error for r in failed)
    assert records[0].state == "FAIL"  # the first trial failed ...
    assert any(r.state == "COMPLETE" and np.isfinite(r.value) for r in records)  # ... and the search went on


def test_resume_continues_the_same_study(tmp_path):
    first = _run(tmp_path, max_trials=2)
    again = _run(tmp_path, max_trials=3)  # the limit counts trials of the study, old ones included
    assert len(again) == 3 and [r.number for r in again[:2]] == [0, 1]
    assert [r.params for r in again[:2]] == [r.params for r in first]
    # The same seed proposes the old configurations first: they are skipped, not trained again.
    assert again[2].params not in [r.params for r in first]


def test_tensorboard_logs_each_trials_validation_curve(tmp_path):
    from dataclasses import replace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = replace(_search_data(), log_dir=str(tmp_path / "tb"))
    job = _job(tmp_path, 2, space=SPACE[:2] + (Choice("activation", ("relu",)),) + SPACE[3:], name="tb")
    records = search(job, data, Budget(120), EventLog(verbose=False))
    for record in records:
        events = EventAccumulator(str(tmp_path / "tb" / f"trial_{record.number}"), size_guidance={"tensors": 0})
        events.Reload()
        curve = events.Tensors("validation_auc")
        assert [e.step for e in curve] == [5, 10]
        assert "hyperparameters" in events.Tags()["tensors"]


@pytest.mark.parametrize("changed", [{"sort_metric": "logloss", "direction": "minimize"}, {"seed": 4},
                                     {"nfolds": 3}, {"protocol": "holdout", "nfolds": None}])
def test_resume_with_other_settings_is_refused_not_mixed(tmp_path, changed):
    _run(tmp_path, max_trials=1)
    with pytest.raises(InputError, match="new --project or --output") as info:
        _run(tmp_path, max_trials=2, **changed)
    assert next(iter(changed)) in str(info.value)
    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    assert len(study.trials) == 1  # nothing of the refused run reached the study


def test_a_small_space_ends_the_search_instead_of_repeating_it(tmp_path):
    one = SPACE[:2] + (Choice("activation", ("relu",)),) + SPACE[3:6] + (Float("learning_rate", 1e-2, 1e-2),) + \
        SPACE[7:]
    records = search(_job(tmp_path, None, space=one), _search_data(), Budget(300), EventLog(verbose=False))
    assert len(records) == 1 and records[0].state == "COMPLETE"  # its one configuration ran once


def test_resume_leaves_a_live_runs_trial_alone(tmp_path):
    # Another live process (here: a sleeping child) owns a RUNNING trial of the same journal study.
    job = _job(tmp_path, 2)
    study = open_study(None, Path(tmp_path), "t", job)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        trial = study.ask()
        trial.set_user_attr("worker", f"{os.uname().nodename}:{live.pid}")
        dead = study.ask()
        dead.set_user_attr("worker", f"{os.uname().nodename}:999999999")  # no such process
        # The live trial holds one of the two places until the search's time ends: 30 s, not two minutes.
        search(job, _search_data(), Budget(30), EventLog(verbose=False))
        states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
        assert states[trial.number] == "RUNNING"  # not failed by this run's resume
        assert states[dead.number] == "FAIL"  # its process is gone: failed and retried
    finally:
        live.kill()


def test_an_untagged_orphan_is_retried_after_its_grace_without_surplus_trials(tmp_path):
    # A run killed between creating a trial and tagging it leaves it RUNNING with no owner. Resumed within the
    # grace, the search once counted it as claimed and asked surplus trials until its time ran out (550 in 68 s),
    # ending one short of --max-models; now it waits, and retries the trial once the grace is over.
    from automl.engines.optuna_engine import WorkerPolicy

    job = _population_job(tmp_path, 3, 2)
    orphan = open_study(None, Path(tmp_path), "p", job).ask()  # RUNNING, untagged, just created
    records = search(job, _search_data(), Budget(120), EventLog(verbose=False), policy=WorkerPolicy(grace_seconds=3.0))
    trials = open_study(None, Path(tmp_path), "p").trials
    assert trials[orphan.number].state.name == "FAIL" and trials[orphan.number].user_attrs["interrupted"]
    assert len([r for r in records if not r.error.startswith("interrupted")]) == 3  # --max-models results
    assert [t.number for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len([t for t in trials if t.user_attrs.get("surplus")]) <= 2


@pytest.mark.parametrize("population", [1, None])
def test_a_run_of_failures_stops_with_a_warning_and_keeps_whole_errors(tmp_path, population):
    from automl.engines import MAX_CONSECUTIVE_FAILURES
    from automl.engines.optuna_engine import TPE_STARTUP
    from automl.population import MAX_SIZE

    broken = tuple(Choice("activation", ("no-such-activation",)) if p.name == "activation" else p for p in SPACE)
    events = EventLog(verbose=False)
    job = _job(tmp_path, None, space=broken)
    job = replace(job, config=job.config.replace(population=population))
    records = search(job, _search_data(), Budget(300), events)
    # One at a time it stops at the limit; with rounds, TPE's random first trials train alone, then a round (all
    # asked at once) ends.
    assert len(records) == (MAX_CONSECUTIVE_FAILURES if population == 1 else TPE_STARTUP + MAX_SIZE)
    assert {r.state for r in records} == {"FAIL"}
    stop = [e for e in events.rows if "search stopped" in e["message"]]
    assert stop and stop[0]["level"] == "WARNING" and "in a row failed" in stop[0]["message"]
    assert all(r.error.startswith("ValueError") and "no-such-activation" in r.error for r in records)


def _population_job(tmp_path, max_trials: int | None, population: int | None, name: str = "p") -> SearchJob:
    config = RunConfig.from_options(max_models=max_trials, seed=3, workers=1, population=population)
    return SearchJob(config, SPACE, (), get("auc", "binary"), name, Path(tmp_path), 10, StopPolicy(0, 0, 0.0),
                     IDENTITY)


def test_a_population_round_tells_each_member_as_its_own_trial(tmp_path):
    from automl.engines.trainers import train_trial

    data = _search_data()
    records = search(_population_job(tmp_path, 8, 8), data, Budget(120), EventLog(verbose=False))
    assert len(records) == 8
    study = open_study(None, Path(tmp_path), "p")
    assert all(t.user_attrs.get("population") for t in study.trials if "no-such" not in t.params["activation"])
    failed = [r for r in records if r.state == "FAIL"]
    assert failed and all(r.error.startswith("ValueError") and "no-such-activation" in r.error for r in failed)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete, "the valid members trained although others in their round failed"
    for trial in complete:
        assert sorted(trial.intermediate_values) == [5, 10]  # the pruner saw every member's validations
    # A member's result is what the one-at-a-time trainer gives for the same trial (no dropout in SPACE).
    first = complete[0]
    alone, epoch = train_trial(first.params, data, get("auc", "binary"), 3 + first.number, None, None, 10)
    assert first.value == pytest.approx(alone, abs=2e-3) and first.user_attrs["best_epoch"] == epoch
    # Each member's cost is its share of the round (what it recorded), not the round's wall time (Optuna's).
    by_number = {r.number: r for r in records}
    assert all(by_number[t.number].duration_s == pytest.approx(t.user_attrs["train_seconds"], abs=1e-3)
               for t in complete)
    assert all(t.user_attrs["train_seconds"] < t.duration.total_seconds() for t in complete)


def test_population_rounds_stop_at_max_models_and_resume(tmp_path):
    job = _population_job(tmp_path, 10, 8)
    assert len(search(job, _search_data(), Budget(120), EventLog(verbose=False))) == 10  # a round of 8, then 2
    again = search(_population_job(tmp_path, 12, None), _search_data(), Budget(120), EventLog(verbose=False))
    assert len(again) == 12 and len({json.dumps(r.params, sort_keys=True) for r in again}) == 12


def test_a_round_gives_the_slots_its_members_free_to_new_trials(tmp_path, monkeypatch):
    from automl import population

    fits: list[int] = []
    fit = population.PopulationMLP.fit
    monkeypatch.setattr(population.PopulationMLP, "fit",
                        lambda self, *a, **k: fits.append(self.size) or fit(self, *a, **k))
    records = search(_population_job(tmp_path, 12, 4), _search_data(), Budget(120), EventLog(verbose=False))
    # One population of 4 slots trained every valid trial: each that ended (or failed) made room for the next.
    assert len(records) == 12 and fits == [4]
    assert len({json.dumps(r.params, sort_keys=True) for r in records}) == 12
    assert {r.state for r in records} >= {"COMPLETE", "FAIL"}


def test_a_rounds_members_share_their_inputs_and_each_input_option_is_searched(tmp_path, monkeypatch):
    from automl import population

    rounds: list[set[tuple[str, str]]] = []
    fit = population.PopulationMLP.fit
    monkeypatch.setattr(population.PopulationMLP, "fit", lambda self, *a, **k: rounds.append(
        {(p["input_scaling"], p["numeric_embedding"]) for p in self.members}) or fit(self, *a, **k))
    space = SPACE[:2] + (Choice("activation", ("relu",)),) + SPACE[3:] + (
        Choice("input_scaling", ("standard", "quantile")), Choice("numeric_embedding", ("none", "periodic")))
    job = replace(_population_job(tmp_path, 24, 4), space=space)
    records = search(job, _search_data(), Budget(120), EventLog(verbose=False))
    assert len(records) == 24 and "FAIL" not in {r.state for r in records}  # no round mixed its inputs
    assert rounds and all(len(inputs) == 1 for inputs in rounds)  # a round (and every refill) shares its inputs
    trained = {(r.params["input_scaling"], r.params["numeric_embedding"]) for r in records}
    assert ("standard", "periodic") in trained or ("quantile", "periodic") in trained


def test_rounds_of_a_chosen_size_start_after_tpes_random_trials_trained_alone(tmp_path):
    from automl.engines.optuna_engine import TPE_STARTUP

    records = search(_population_job(tmp_path, 20, None), _search_data(), Budget(120), EventLog(verbose=False))
    assert len(records) == 20
    in_rounds = [t.number for t in open_study(None, Path(tmp_path), "p").trials if t.user_attrs.get("population")]
    assert in_rounds and min(in_rounds) >= TPE_STARTUP  # a round fixes its batch size and width: not from the start


def test_a_rounds_size_follows_its_configuration_the_rows_and_the_time_left():
    from automl.engines.optuna_engine import population_size
    from automl.population import FLOPS_PER_GPU, FLOPS_PER_THREAD, MAX_SIZE, MAX_SIZE_GPU, choose_size

    cpu, small, wide = 2 * FLOPS_PER_THREAD, {"batch_size": 32, "units": 64}, {"batch_size": 16, "units": 256}
    assert choose_size(small, 614, 8, 60, cpu) == MAX_SIZE  # Pima, a minute left: a full round
    assert choose_size(small, 614, 8, 60, cpu, limit=10) == 10  # --max-models leaves 10
    assert choose_size(small, 614, 8, 3, cpu) == 1  # seconds left: the trial trains alone
    assert choose_size(wide, 614, 8, 60, cpu) == 1  # a round of 256-wide networks would not fit
    assert choose_size(small, 30_000, 8, 60, cpu) == 1  # nor one on 30,000 rows
    # Less time, or one thread instead of two: a smaller round.
    assert 1 < choose_size(small, 614, 8, 20, FLOPS_PER_THREAD) < choose_size(small, 614, 8, 20, cpu) < MAX_SIZE
    assert choose_size(small, 614, 8, 60, FLOPS_PER_GPU) == MAX_SIZE_GPU
    # Periodic embeddings widen a member's first layer 16-fold: its rounds are smaller.
    periodic = {**small, "numeric_embedding": "periodic"}
    assert 1 < choose_size(periodic, 614, 8, 20, cpu) < choose_size(small, 614, 8, 20, cpu)
    # A packed ensemble is a population of its own, and the population graph holds no category embeddings.
    assert choose_size({**small, "ensemble_size": 8}, 614, 8, 60, cpu) == 1
    assert choose_size({**small, "categorical_embedding": "embedding"}, 614, 8, 60, cpu) == 1
    assert choose_size({**small, "ensemble_size": 1, "categorical_embedding": "onehot"}, 614, 8, 60, cpu) == MAX_SIZE
    data = _search_data()
    assert population_size(_population_job("/tmp", None, None), data) is None  # chosen each round
    assert population_size(_population_job("/tmp", None, 5), data) == 5  # --population
    assert population_size(_population_job("/tmp", None, None), replace(data, family="cnn")) == 1
    assert population_size(_population_job("/tmp", None, 8), replace(data, log_dir="/tmp/tb")) == 1
