"""The refit stage: under a holdout the leader's members refit on all rows, keep their scores, export both."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from automl import AutoML
from automl.budget import Budget
from automl.metrics import score_all
from automl.refit import _refit, refit_estimate, refit_full
from conftest import REPO, run_module


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refit")
    frame = pd.read_csv(REPO / "datasets" / "titanic.csv")
    # The scheduler keeps the refits' estimated time (automl.refit.refit_estimate) from the queue.
    aml = AutoML(max_runtime_secs=40, validation="holdout", output_dir=tmp / "run", verbose=False,
                 include_algos=["GLM", "GBM", "StackedEnsemble"]).fit(frame, target="Survived")
    return aml, frame, tmp


def test_the_leaders_members_refit_on_all_rows_and_keep_their_holdout_scores(holdout_run):
    aml, frame, _ = holdout_run
    state = aml.state_
    refit = [e for e in aml.evaluated if getattr(e.model, "full", None) is not None]
    assert refit, "\n".join(r["message"] for r in aml.events.rows)
    leader = aml.leader
    members = set(leader.params.get("weights", {leader.model_id: 1.0}))
    assert {e.model.model_id for e in refit} <= members
    scored = state.y[state.protocol.scored]
    for e in refit:
        assert e.model.params["refit_rows"] == len(frame)
        # The board's metrics are the holdout model's, from its holdout predictions, not the refit's.
        assert e.model.metrics == pytest.approx(score_all("binary", scored, e.oof))
        rows = frame.drop(columns=["Survived"])
        assert not np.allclose(e.model.predict_proba(rows), e.model.scored_proba(rows))
        np.testing.assert_allclose(e.model.scored_proba(rows.iloc[state.protocol.scored])[:, 1], e.oof[:, 1],
                                   rtol=1e-6)


def test_a_refit_model_exports_both_models_and_predicts_with_the_refit_in_a_fresh_process(holdout_run):
    aml, frame, tmp = holdout_run
    model = next(e.model for e in aml.evaluated if getattr(e.model, "full", None) is not None)
    folder = tmp / "run" / "models" / model.model_id
    card = json.loads((folder / "model.json").read_text())
    assert card["refit_rows"] == len(frame) and (folder / "full").is_dir() and (folder / "fold_0").is_dir()
    assert card["evaluation"]["protocol"] == "holdout"
    frame.head(40).to_csv(tmp / "rows.csv", index=False)
    proc = run_module("automl.predict", folder, tmp / "rows.csv", "--output", tmp / "preds.csv", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(pd.read_csv(tmp / "preds.csv")["p_1"], model.predict(frame.head(40))["p_1"],
                               rtol=1e-6)


def test_nothing_is_refit_under_cross_validation_or_without_time(holdout_run):
    aml, _, _ = holdout_run
    state = aml.state_
    cv = replace(state, protocol=replace(state.protocol, name="cv"))
    assert refit_full(cv) == [] and refit_estimate(cv) == 0.0
    for e in state.evaluated:
        e.model.full = None
    assert refit_estimate(state) > 0  # the scheduler keeps time for the leader's members (891 / 712 rows)
    spent = replace(state, budget=replace(state.budget, seconds=0.0))
    assert refit_full(spent) == []
    assert any("no time to refit" in r["message"] for r in spent.events.rows)
    # Models that trained on a row sample (their max_rows) would not use the extra rows: none is refit.
    saved = {e.model.model_id: e.model.params for e in state.evaluated}
    for e in state.evaluated:
        e.model.params = {**e.model.params, "max_rows": 100}
    assert refit_full(replace(state, budget=Budget(600.0))) == []
    for e in state.evaluated:
        e.model.params = saved[e.model.model_id]


def test_a_boosted_refit_cut_short_is_kept_only_once_it_has_its_validated_rounds(holdout_run):
    aml, _, _ = holdout_run
    model = copy.deepcopy(next(e.model for e in aml.evaluated if e.model.algo == "GBM"))
    past = time.monotonic() - 1  # the refit stops after its first round (of 10 x the validated rounds)
    model.folds[0].estimator.best_iteration_ = 1
    kept = _refit(model, aml.state_, 10.0, past)
    assert kept is not None and kept.estimator.cut_short_ and kept.estimator.best_iteration_ == 1
    model.folds[0].estimator.best_iteration_ = 2  # validated at 2 rounds: 1 is an undertrained model
    assert _refit(model, aml.state_, 10.0, past) is None


def test_no_refit_is_started_that_would_train_longer_than_the_per_model_cap(holdout_run):
    """``--max-runtime-secs-per-model`` binds the refits: one estimated over the cap is not started."""
    aml, _, _ = holdout_run
    state = aml.state_
    for e in state.evaluated:
        e.model.full = None
    roomy = replace(state, budget=Budget(600.0))
    capped = replace(roomy, config=roomy.config.replace(max_runtime_secs_per_model=1e-6))
    assert refit_full(capped) == []
    assert any("over --max-runtime-secs-per-model" in r["message"] for r in capped.events.rows)
    assert refit_full(roomy) != []  # the same state without the cap refits
