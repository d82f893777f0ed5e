"""KerasNetwork: real training on Pima and on the regression data, early stopping, divergence."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from automl import data
from automl.errors import FailedTrialError
from automl.evaluation import holdout_split
from automl.preprocess import encode_target, infer_schema, make_preprocessor
from automl.spaces import MLP_WARM_STARTS
from automl.training import KerasNetwork


def _split(name: str):
    ds = data.load(name)
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    train, val = holdout_split(y, schema.task, 0.2, seed=0)
    pre = make_preprocessor(schema).fit(x.iloc[train])
    return pre.transform(x.iloc[train]), y[train], pre.transform(x.iloc[val]), y[val]


def test_mlp_learns_pima_with_early_stopping():
    xt, yt, xv, yv = _split("diabetes")
    net = KerasNetwork(dict(MLP_WARM_STARTS[0]), "binary", epochs=100, seed=0)
    reports = []
    net.fit(xt, yt, xv, monitor=lambda p: roc_auc_score(yv, p[:, 1]), report=lambda s, e: reports.append(e))
    proba = net.predict_proba(xv)
    assert proba.shape == (len(yv), 2)
    assert roc_auc_score(yv, proba[:, 1]) >= 0.78
    # The restored weights are those of the best epoch seen.
    assert roc_auc_score(yv, proba[:, 1]) == pytest.approx(max(s for _, s in net.history_), abs=1e-6)
    assert 0 < net.best_epoch_ <= 100 and reports == [e for e, _ in net.history_]


def test_regression_targets_are_standardized():
    xt, yt, xv, yv = _split("diabetes-progression")
    params = dict(MLP_WARM_STARTS[0], learning_rate=3e-3)
    net = KerasNetwork(params, "regression", epochs=60, seed=0)
    net.fit(xt, yt, xv, monitor=lambda p: r2_score(yv, p))
    assert net.y_std_ == pytest.approx(np.std(yt))
    assert r2_score(yv, net.predict(xv)) > 0.3  # unscaled targets give ~0.1 on this data


def test_divergence_is_a_failed_trial():
    xt, yt, xv, yv = _split("diabetes-progression")
    params = dict(MLP_WARM_STARTS[0], optimizer="sgd", learning_rate=1e3, l2=0.0, dropout=0.0)
    with pytest.raises(FailedTrialError, match="learning rate"):
        KerasNetwork(params, "regression", epochs=20, seed=0).fit(xt, yt)


def test_deadline_stops_training_early():
    xt, yt, xv, yv = _split("diabetes")
    net = KerasNetwork(dict(MLP_WARM_STARTS[0]), "binary", epochs=100, seed=0)
    net.fit(xt, yt, xv, monitor=lambda p: roc_auc_score(yv, p[:, 1]), deadline=0.0)  # already past
    assert [e for e, _ in net.history_] == [5]
