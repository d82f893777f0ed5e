"""The Keras Tuner engine: the Optuna engine's contract for every tuner, failures, resume, the budget."""

from __future__ import annotations

import math
import time

import keras_tuner as kt
import pytest
from test_engines import _search_data

from automl.budget import Budget
from automl.config import TUNERS, RunConfig
from automl.engines import MAX_CONSECUTIVE_FAILURES, SearchJob, StopPolicy, get_engine, optuna_engine
from automl.engines.keras_tuner_engine import render, search
from automl.events import EventLog
from automl.metrics import Metric, get
from automl.spaces import MLP_SPACE, Choice, Float, Int

AUC = get("auc", "binary")
# Small networks, but every kind of parameter: Int, log Float, str/int/bool Choice, fixed values.
SPACE = (Int("n_layers", 1, 2), Choice("units", (8, 16)), Choice("activation", ("relu", "elu")),
         Float("dropout", 0.0, 0.2), Choice("batch_norm", (False, True)), Float("l2", 1e-5, 1e-3, log=True),
         Float("learning_rate", 3e-3, 3e-2, log=True), Choice("optimizer", ("adam",)), Choice("batch_size", (64,)))
GOOD = {"n_layers": 1, "units": 16, "activation": "relu", "dropout": 0.1, "batch_norm": False, "l2": 1e-4,
        "learning_rate": 1e-2, "optimizer": "adam", "batch_size": 64}
BAD = dict(GOOD, activation="no-such-activation")


def _with_activations(*names: str) -> tuple:
    return tuple(Choice("activation", names) if p.name == "activation" else p for p in SPACE)


@pytest.fixture(scope="module")
def data():
    return _search_data()


@pytest.fixture(scope="module")
def optuna_record(data, tmp_path_factory):
    """One trial of the Optuna engine on the same space: the shape every engine's records must have."""
    job = _job(tmp_path_factory.mktemp("optuna"), "optuna", max_trials=1, warm=(GOOD,), space=SPACE, max_epochs=10,
               refit_trials=0, metric=AUC)
    return optuna_engine.search(job, data, Budget(300), EventLog(verbose=False))[0]


def _job(tmp_path, engine_or_tuner, *, max_trials, warm, space, max_epochs, refit_trials, metric) -> SearchJob:
    engine = "optuna" if engine_or_tuner == "optuna" else "keras-tuner"
    tuner = "hyperband" if engine == "optuna" else engine_or_tuner
    config = RunConfig.from_options(max_models=max_trials, seed=3, engine=engine, tuner=tuner, workers=1)
    identity = {"task": "binary", "sort_metric": metric.name, "seed": 3}
    return SearchJob(config, space, warm, metric, "t", tmp_path, max_epochs, StopPolicy(refit_trials, 0, 0.0),
                     identity)


def _run(tmp_path, data, tuner, *, max_trials, warm=(GOOD,), space=SPACE, budget=None, max_epochs=10,
         refit_trials=0.0, events=None, metric=AUC):
    job = _job(tmp_path, tuner, max_trials=max_trials, warm=warm, space=space, max_epochs=max_epochs,
               refit_trials=refit_trials, metric=metric)
    return search(job, data, budget or Budget(300), events or EventLog(verbose=False))


def test_registered_as_an_engine():
    assert get_engine("keras-tuner").search is search


@pytest.mark.parametrize("tuner", TUNERS)
def test_each_tuner_gives_the_records_the_optuna_engine_gives(tmp_path, data, tuner, optuna_record):
    reference = optuna_record
    # Hyperband gets 30 epochs, but its first bracket trains each trial for only 10 of them.
    records = _run(tmp_path, data, tuner, max_trials=3, max_epochs=30 if tuner == "hyperband" else 10)
    assert [r.number for r in records] == [0, 1, 2]
    assert records[0].params == GOOD  # the warm start goes first
    assert len({tuple(sorted(r.params.items())) for r in records}) == 3
    for r in records:
        assert type(r) is type(reference) and r.state == "COMPLETE" and r.error == ""
        assert list(r.params) == list(reference.params)
        assert {k: type(v) for k, v in r.params.items()} == {k: type(v) for k, v in reference.params.items()}
        assert 0.5 < r.value <= 1.0 and isinstance(r.value, float)
        assert isinstance(r.best_epoch, int) and isinstance(r.duration_s, float) and r.duration_s > 0
        assert 0 < r.best_epoch <= 10


@pytest.mark.parametrize("tuner", TUNERS)
def test_a_failing_configuration_is_recorded_and_the_search_goes_on(tmp_path, data, tuner, capsys):
    records = _run(tmp_path, data, tuner, max_trials=3, warm=(BAD, GOOD),
                   space=_with_activations("relu", "no-such-activation"))
    assert len(records) == 3
    failed, rest = records[0], records[1:]
    assert failed.state == "FAIL" and math.isnan(failed.value) and failed.params == BAD
    assert failed.error.startswith("ValueError:") and "no-such-activation" in failed.error
    assert rest[0].state == "COMPLETE" and rest[0].params == GOOD  # ... and the search went on
    assert "Traceback" not in capsys.readouterr().err  # Keras Tuner's debug printing is off


def test_a_run_of_failures_stops_the_search(tmp_path, data):
    events = EventLog(verbose=False)
    records = _run(tmp_path, data, "random", max_trials=MAX_CONSECUTIVE_FAILURES + 5, warm=(),
                   space=_with_activations("no-such-activation"), events=events)
    assert len(records) == MAX_CONSECUTIVE_FAILURES and {r.state for r in records} == {"FAIL"}
    assert any(e["level"] == "WARNING" and "in a row failed" in e["message"] for e in events.rows)


@pytest.mark.parametrize("tuner", TUNERS)
def test_resume_continues_without_redoing_trials(tmp_path, data, tuner):
    first = _run(tmp_path, data, tuner, max_trials=2)
    events = EventLog(verbose=False)
    again = _run(tmp_path, data, tuner, max_trials=3, events=events)  # the limit counts earlier trials too
    assert [r.number for r in again] == [0, 1, 2]
    assert again[:2] == first  # the same records, durations included: they were read back, not rerun
    assert again[2].params not in [r.params for r in first]
    assert any("resuming" in e["message"] for e in events.rows)


class Killed(BaseException):
    """Stands in for SIGTERM: Keras Tuner catches ``Exception``, so nothing of the trial is recorded."""


def test_an_interrupted_search_reruns_the_interrupted_trial_in_its_place(tmp_path, data):
    events = EventLog(verbose=False)

    def auc_until_killed(y, proba):
        if any(e["message"].startswith("trial 0 ") for e in events.rows):
            raise Killed  # in the middle of trial 1
        return AUC.fn(y, proba)

    with pytest.raises(Killed):
        _run(tmp_path, data, "random", max_trials=3, events=events,
             metric=Metric("auc", auc_until_killed, True, ("binary",)))
    records = _run(tmp_path, data, "random", max_trials=3)
    assert [r.number for r in records] == [0, 1, 2] and {r.state for r in records} == {"COMPLETE"}
    assert len({tuple(sorted(r.params.items())) for r in records}) == 3  # no duplicates, exactly as many as asked


def test_the_budget_decides_before_each_trial(tmp_path, data):
    frozen = time.monotonic()
    # A frozen clock leaves 300 s, and the stop rule wants a huge refit after the search:
    # after one trial, its measured length says no further trial fits.
    records = _run(tmp_path, data, "random", max_trials=5, budget=Budget(300, clock=lambda: frozen),
                   refit_trials=1e9)
    assert len(records) == 1 and records[0].state == "COMPLETE"

    now = [frozen]
    spent = Budget(300, clock=lambda: now[0])
    now[0] += 300  # nothing left: no trial starts, and the earlier ones are still reported
    assert _run(tmp_path, data, "random", max_trials=5, budget=spent) == records
    assert _run(tmp_path / "new", data, "hyperband", max_trials=5, budget=spent) == []


def test_render_gives_keras_tuner_the_same_space():
    hp = render(SPACE)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"n_layers": "Int", "units": "Choice", "activation": "Choice", "dropout": "Float",
                     "batch_norm": "Boolean", "l2": "Float", "learning_rate": "Float", "optimizer": "Fixed",
                     "batch_size": "Fixed"}
    assert hp.get("l2") == 1e-5 and [p.sampling for p in hp.space if p.name == "l2"] == ["log"]
    assert isinstance(render((Float("x", 0.5, 0.5),)).space[0], kt.engine.hyperparameters.Fixed)
    # The real space renders whole, and its warm starts are inside it.
    assert [p.name for p in render(MLP_SPACE).space] == [p.name for p in MLP_SPACE]
    with pytest.raises(ValueError, match="one value type"):
        render((Choice("mixed", (1, "a")),))


def test_warm_starts_outside_the_space_are_rejected(tmp_path, data):
    with pytest.raises(ValueError, match="units=999"):
        _run(tmp_path, data, "random", max_trials=1, warm=(dict(GOOD, units=999),))
    with pytest.raises(ValueError, match="--tuner must be one of"):
        _run(tmp_path, data, "grid", max_trials=1)
