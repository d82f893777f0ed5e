"""The evaluation protocol: the rule that picks CV or a holdout, its folds, and scoring on its rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automl.data import load
from automl.evaluation import (
    MAX_HOLDOUT_ROWS,
    CutShortError,
    choose_protocol,
    cross_validate,
    make_protocol,
)
from automl.models import Candidate
from automl.preprocess import encode_target, infer_schema


def test_rule_keeps_cv_on_small_data_and_holds_out_on_large():
    assert choose_protocol(768, 8, 120)[0] == "cv"  # diabetes
    assert choose_protocol(5_000, 20, 120)[0] == "cv"  # churn
    assert choose_protocol(160_000, 35, 300)[0] == "holdout"  # the large-tables issue's table
    assert choose_protocol(336_776, 17, 600)[0] == "holdout"  # flights
    # A longer budget affords CV on more rows.
    assert choose_protocol(20_000, 20, 30)[0] == "holdout"
    assert choose_protocol(20_000, 20, 3600)[0] == "cv"


def test_explicit_settings_override_the_rule():
    assert choose_protocol(1_000_000, 35, 60, validation="cv")[0] == "cv"
    assert choose_protocol(100, 3, 600, validation="holdout")[0] == "holdout"
    assert choose_protocol(1_000_000, 35, 60, nfolds=3) == ("cv", "--nfolds 3")


def test_holdout_is_stratified_bounded_and_disjoint():
    y = np.r_[np.zeros(400_000, int), np.ones(100_000, int)]
    protocol = make_protocol(y, "binary", "holdout", None, seed=0)
    (train, test), = protocol.folds
    assert len(test) == MAX_HOLDOUT_ROWS and np.array_equal(protocol.scored, test)
    assert not np.intersect1d(train, test).size and len(train) + len(test) == len(y)
    assert y[test].mean() == pytest.approx(0.2, abs=1e-3)
    assert protocol.nfolds is None and "holdout of 50000 rows" in protocol.label()
    # The metalearner's folds cover the scored rows (positions in them), each once.
    covered = np.sort(np.concatenate([t for _, t in protocol.level_one]))
    assert np.array_equal(covered, np.arange(len(test)))


def test_cv_scores_every_row_once():
    y = np.arange(100) % 2
    protocol = make_protocol(y, "binary", "cv", 4, seed=1)
    assert protocol.nfolds == 4 and protocol.describe()["protocol"] == "cv"
    assert np.array_equal(np.sort(np.concatenate([t for _, t in protocol.folds])), np.arange(100))


def _diabetes():
    ds = load("diabetes")
    schema = infer_schema(ds)
    frame = ds.frame
    return frame.drop(columns=[ds.target]), encode_target(schema, frame[ds.target]), schema


def _glm() -> Candidate:
    from sklearn.linear_model import LogisticRegression

    return Candidate("GLM_1", "GLM", lambda: LogisticRegression(max_iter=500))


def test_a_holdout_row_is_scored_only_on_its_rows():
    x, y, schema = _diabetes()
    protocol = make_protocol(y, "binary", "holdout", None, seed=0)
    result = cross_validate(_glm(), x, y, schema, protocol.folds, protocol.scored)
    assert result.oof.shape == (len(protocol.scored), 2)
    from sklearn.metrics import roc_auc_score

    assert result.model.metrics["auc"] == pytest.approx(roc_auc_score(y[protocol.scored], result.oof[:, 1]))
    assert len(result.model.folds) == 1


def test_no_fold_starts_after_the_deadline():
    import time

    x, y, schema = _diabetes()
    protocol = make_protocol(y, "binary", "cv", 5, seed=0)
    with pytest.raises(CutShortError, match="0 of 5 folds"):
        cross_validate(_glm(), x, y, schema, protocol.folds, deadline=time.monotonic() - 1)
    assert isinstance(x, pd.DataFrame)


def test_more_folds_than_rows_is_an_input_error():
    from automl.config import RunConfig
    from automl.errors import InputError
    from automl.state import start

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.5, 2.5, 2.0, 4.0]})
    with pytest.raises(InputError, match="fewer than --nfolds 5"):
        start(RunConfig.from_options(target="y", nfolds=5, verbose=False), frame)


def test_a_capped_candidate_trains_on_a_stratified_sample_and_is_still_scored_on_every_row():
    from sklearn.linear_model import LogisticRegression

    class Counting(LogisticRegression):
        seen: list[np.ndarray] = []

        def fit(self, x, y):
            Counting.seen.append(np.asarray(y))
            return super().fit(x, y)

    x, y, schema = _diabetes()
    protocol = make_protocol(y, "binary", "cv", 3, seed=0)
    capped = Candidate("GLM_1", "GLM", lambda: Counting(max_iter=500), {"C": 1.0}, max_rows=200)
    result = cross_validate(capped, x, y, schema, protocol.folds)
    assert [len(s) for s in Counting.seen] == [200, 200, 200]  # folds of 512 training rows each
    for seen in Counting.seen:  # stratified: the class shares of the data
        assert abs(seen.mean() - y.mean()) < 0.01
    assert result.oof.shape == (len(y), 2) and result.model.params == {"C": 1.0, "max_rows": 200}
    # Under the cap nothing changes, and the params say nothing of it.
    Counting.seen.clear()
    uncapped = cross_validate(Candidate("GLM_1", "GLM", lambda: Counting(max_iter=500), {"C": 1.0}, max_rows=600),
                              x, y, schema, protocol.folds)
    assert [len(s) for s in Counting.seen] == [512, 512, 512] and uncapped.model.params == {"C": 1.0}


def test_a_network_refit_preprocesses_only_the_rows_it_trains_on(monkeypatch):
    """Networks train on a row sample: the sample is drawn before one-hot encoding, not after (encoding a
    fold's 8M training rows first took 18 GB, and the OOM killer ended the run)."""
    from automl import evaluation, search
    from automl.config import RunConfig
    from automl.engines import TrialRecord
    from automl.spaces import MLP_WARM_STARTS
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=60, validation="holdout",
                                         verbose=False))
    monkeypatch.setattr(search, "MAX_REFIT_ROWS", 100)
    fitted_rows: list[int] = []
    real = evaluation.make_preprocessor

    def recording(*args, **kwargs):
        pre = real(*args, **kwargs)
        fit = pre.fit_transform
        pre.fit_transform = lambda x, y=None: (fitted_rows.append(len(x)), fit(x, y))[1]
        return pre

    monkeypatch.setattr(evaluation, "make_preprocessor", recording)
    state.trials = [TrialRecord(0, "COMPLETE", 0.8, best_epoch=2, duration_s=1.0, params=dict(MLP_WARM_STARTS[0]),
                                family="mlp")]
    from automl.schedule import Pace

    pace = Pace("MLP_0", state.budget.clock(), state.budget.deadline)
    done = search.evaluate_configuration(state, state.trials[0], pace)
    assert done is not None and done.model.model_id == "MLP_0"
    assert fitted_rows == [100] and done.model.params["max_rows"] == 100
    # Still scored on every holdout row.
    assert len(done.oof) == len(state.protocol.scored)
