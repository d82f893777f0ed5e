"""The boosting search: GBM configurations searched by either engine over one space, ranked as GBM_grid rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from automl.boosting import TOP_CONFIGS, search_boosting
from automl.config import RunConfig
from automl.export import save_model
from automl.models import train_boosted
from automl.search import search_data, search_job
from automl.spaces import GBM_SPACE, GBM_WARM_STARTS, MAX_EPOCHS, MLP_SPACE, Choice
from automl.state import start
from conftest import REPO, subprocess_env


def _state(tmp_path, **options):
    return start(RunConfig.from_options(**{"dataset": "diabetes", "output_dir": str(tmp_path), "verbose": False,
                                           "workers": 1, **options}))


def test_a_boosted_trial_early_stops_on_the_search_rows(tmp_path):
    state = _state(tmp_path, max_runtime_secs=60)
    data = search_data(state, "gbm")
    # Raw columns for LightGBM, not the networks' scaled matrix.
    assert list(data.x_train.columns) == state.schema.features
    slow = {**GBM_WARM_STARTS[0], "learning_rate": 0.01, "patience": 100}
    value, epoch = train_boosted(slow, data, state.metric, 0, None, MAX_EPOCHS)
    assert 0.75 < value <= 1.0, "a boosted model on Pima ranks far better than chance"
    assert 1 <= epoch < MAX_EPOCHS, "early stopping ended it before its 2,000 rounds"
    # A deadline already past stops it after one round, with what it has.
    cut_value, cut_epoch = train_boosted(slow, data, state.metric, 0, time.monotonic(), MAX_EPOCHS)
    assert cut_epoch == 1 and 0.5 < cut_value <= 1.0


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_both_engines_search_the_family_and_rank_its_best(tmp_path, engine):
    state = _state(tmp_path, max_runtime_secs=40, engine=engine, max_models=6)
    ranked = search_boosting(state, 20)
    trials = [t for t in state.trials if t.family == "gbm"]
    assert 1 <= len(trials) <= 6, [t.number for t in trials]
    for t in trials:
        assert list(t.params) == [p.name for p in GBM_SPACE]
        for p in GBM_SPACE:
            value = t.params[p.name]
            assert value in p.choices if isinstance(p, Choice) else p.low <= value <= p.high, (p, value)
    complete = sorted((t for t in trials if t.state == "COMPLETE"), key=lambda t: -t.value)
    assert complete, [t.error for t in trials]
    # The best configurations, best first, each ranked on the protocol under its own name.
    assert 1 <= len(ranked) <= TOP_CONFIGS
    assert ranked[0].model.model_id == f"GBM_grid_{complete[0].number}"
    assert ranked[0].model.params == complete[0].params
    assert all(e.model.algo == "GBM" and len(e.model.folds) == len(state.protocol.folds) for e in ranked)
    assert all(e in state.evaluated for e in ranked)


def test_a_ranked_configuration_predicts_the_same_in_a_fresh_process(tmp_path):
    state = _state(tmp_path, max_runtime_secs=30, max_models=3)
    best = search_boosting(state, 15)[0].model
    save_model(best, tmp_path / best.model_id, state.protocol.describe())
    rows = state.dataset.frame.drop(columns=[state.dataset.target]).head(50)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    code = ("import sys, numpy as np, pandas as pd; from automl.export import load_model; "
            "m = load_model(sys.argv[1]); np.save(sys.argv[3], m.predict_proba(pd.read_csv(sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, tmp_path / best.model_id, tmp_path / "rows.csv",
                           tmp_path / "fresh.npy"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "fresh.npy"), best.predict_proba(rows), rtol=1e-6)
    card = json.loads((tmp_path / best.model_id / "model.json").read_text())
    assert card["algo"] == "GBM"


def test_excluded_the_family_is_not_searched(tmp_path):
    excluded = _state(tmp_path / "a", max_runtime_secs=60, exclude_algos=["GBM"])
    assert search_boosting(excluded, 10) == [] and not excluded.trials


def test_a_skewed_target_searches_its_scale_and_predicts_on_the_original_one(tmp_path):
    # Titanic's fares: a real price, ≥ 0 and skewed (skewness 4.8), as the regression target.
    state = start(RunConfig.from_options(dataset=str(REPO / "datasets" / "titanic.csv"), target="Fare",
                                         task="regression", output_dir=str(tmp_path), verbose=False, workers=1,
                                         max_runtime_secs=40, max_models=5, seed=0))
    assert state.skewed_target
    job = search_job(state, family="gbm")
    assert [p.name for p in job.space] == [p.name for p in GBM_SPACE] + ["target"]
    assert {w["target"] for w in job.warm_starts} == {"raw", "tweedie"}
    ranked = search_boosting(state, 25)
    trials = [t for t in state.trials if t.family == "gbm" and t.state == "COMPLETE"]
    assert {t.params["target"] for t in trials} >= {"raw", "tweedie"}, [t.params for t in trials]
    rows = state.dataset.frame.drop(columns=[state.dataset.target]).head(100)
    for evaluated in ranked:
        fitted = evaluated.model.folds[0].estimator
        assert fitted.log_target == (evaluated.model.params["target"] == "log")
        assert (fitted.params or {}).get("objective") == ("tweedie" if evaluated.model.params["target"] == "tweedie"
                                                           else None)
        values = evaluated.model.predict_proba(rows)
        # Scored on the original scale: fares, not their logs (the mean fare is 32).
        assert np.isfinite(values).all() and values.min() >= 0 and 10 < values.mean() < 100
    # Other families and other targets keep the plain space: the networks' is theirs (with titanic's categorical
    # columns, their embedding searched too).
    assert [p.name for p in search_job(state).space] == [p.name for p in MLP_SPACE] + ["categorical_embedding"]
    assert [p.name for p in search_job(_state(tmp_path / "d"), family="gbm").space] == [p.name for p in GBM_SPACE]
