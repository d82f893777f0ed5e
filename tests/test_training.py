"""KerasNetwork: real training on Pima and on the regression data, early stopping, divergence, deadlines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from automl import data, training
from automl.errors import FailedTrialError
from automl.evaluation import holdout_split
from automl.preprocess import encode_target, infer_schema, make_preprocessor
from automl.spaces import MLP_WARM_STARTS
from automl.training import KerasNetwork
from conftest import REPO, FakeClock, subprocess_env


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
    params = dict(MLP_WARM_STARTS[0], optimizer="sgd", learning_rate=1e30, l2=0.0, dropout=0.0)  # clipped gradients
    with pytest.raises(FailedTrialError, match="learning rate"):
        KerasNetwork(params, "regression", epochs=20, seed=0).fit(xt, yt)


def test_a_past_deadline_stops_training_after_one_step():
    xt, yt, xv, yv = _split("diabetes")
    net = KerasNetwork(dict(MLP_WARM_STARTS[0]), "binary", epochs=100, seed=0)
    net.fit(xt, yt, xv, monitor=lambda p: roc_auc_score(yv, p[:, 1]), deadline=0.0)  # already past
    assert net.cut_short_ and net.n_steps_ == 1
    assert [e for e, _ in net.history_] == [1] and net.best_epoch_ == 1  # a partial epoch counts as one


def test_a_deadline_binds_inside_an_epoch(monkeypatch):
    """The pacer sizes its compiled calls in steps from the last call's pace: an epoch far longer than the time
    left is stopped inside, at the first call that ends past the deadline, whatever the hardware (a fake clock
    that each trained step moves by 0.25 s; the first call times one step)."""
    clock = FakeClock(0.0)
    monkeypatch.setattr(training.time, "monotonic", clock)
    calls: list[int] = []

    def train(first: int, count: int) -> float:
        calls.append(count)
        clock.advance(0.25 * count)
        return 0.5

    pacer = training._Pacer(train, steps_per_epoch=10_000, deadline=20.0)
    done = pacer.train_until(0, 10_000)
    assert calls[0] == 1 and sum(calls) == done < 10_000  # stopped inside the epoch
    assert 20.0 <= clock.now <= 20.0 + 0.25  # each call fits the time left: the deadline binds within a step
    assert max(calls) <= training.CHUNK_SECONDS / 0.25  # no call longer than a chunk


def test_training_ends_in_time_for_its_validation_to_end_by_the_deadline(monkeypatch):
    """Before any validation, a validation's estimated steps (at the pace measured after the first call, which
    traces the graph) are kept from the deadline; after one, the seconds it took (a fake clock: each step 0.25 s,
    the first call 10 s more)."""
    clock = FakeClock(0.0)
    monkeypatch.setattr(training.time, "monotonic", clock)

    calls: list[int] = []

    def train(first: int, count: int) -> float:
        clock.advance(0.25 * count + 10.0 * (not calls))
        calls.append(count)
        return 0.5

    pacer = training._Pacer(train, steps_per_epoch=10_000, deadline=20.0, validation_steps=16)  # 4 s at that pace
    pacer.train_until(0, 10_000)
    assert calls[0] == 1 and len(calls) > 1 and 16.0 <= clock.now <= 16.0 + 0.25
    pacer.validation_seconds = 1.0  # measured: 1 s
    pacer.deadline = clock.now + 10.0
    pacer.train_until(0, 10_000)
    assert pacer.deadline - 1.0 <= clock.now <= pacer.deadline - 1.0 + 0.25


def test_a_cnn_keeps_time_for_its_test_time_views_in_the_validation_it_estimates():
    net = KerasNetwork({"batch_size": 32, "tta": True, "augmentation": "translate+flip"}, "image", family="cnn")
    assert net._validation_steps(np.zeros((960, 8, 8, 3)), rows=5_000) == 960 * 6 / (3 * 32)
    plain = KerasNetwork({"batch_size": 32, "tta": False}, "image", family="cnn")
    assert plain._validation_steps(np.zeros((960, 8, 8, 3)), rows=16) == 960 / (3 * 16)  # batches of the rows


def test_how_steps_are_split_into_calls_does_not_change_the_network(monkeypatch):
    xt, yt, _, _ = _split("diabetes")
    params = dict(MLP_WARM_STARTS[0])  # with dropout: its random masks must not depend on the calls either

    def weights() -> list[np.ndarray]:
        net = KerasNetwork(params, "binary", epochs=3, seed=1).fit(xt, yt)
        return net.model_.get_weights()

    in_big_calls = weights()
    monkeypatch.setattr(training, "CHUNK_SECONDS", 1e-9)  # every call trains one step
    for big, small in zip(in_big_calls, weights(), strict=True):
        np.testing.assert_array_equal(big, small)


def test_new_networks_do_not_warn_about_retracing():
    """Search trials build network after network: TensorFlow must not call that retracing."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    rng = np.random.default_rng(0)
    x, xv = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(32, 4)).astype("float32")
    try:
        for seed in range(6):
            net = KerasNetwork(dict(MLP_WARM_STARTS[1]), "binary", epochs=1, seed=seed)
            net.fit(x, (x[:, 0] > 0).astype(int), xv, monitor=lambda p: float(p[:, 1].mean()))
            net.predict_proba(x[:3])
    finally:
        logger.removeHandler(handler)
    assert not [m for m in messages if "retracing" in m]


# Logical devices must be set before TensorFlow initialises: hence a fresh process.
_MIRRORED = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from automl import devices
    from automl.spaces import MLP_WARM_STARTS
    from automl.training import KerasNetwork

    placement = devices.plan(devices.detect(), 1, "mirrored")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) > 0).astype(int)
    with devices.trial_context(0, placement):
        net = KerasNetwork(dict(MLP_WARM_STARTS[0], batch_size=64), "binary", epochs=10, seed=0)
        net.fit(x[:400], y[:400], x[400:], monitor=lambda p: float(np.mean((p[:, 1] > 0.5) == y[400:])))
    print(json.dumps({"history": net.history_, "steps": net.n_steps_,
                      "replicas": net.model_.distribute_strategy.num_replicas_in_sync}))
""")


def test_a_network_trains_in_steps_under_a_mirrored_strategy():
    done = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["steps"] == 10 * 7  # 400 rows in batches of 64
    assert [e for e, _ in result["history"]] == [5, 10] and result["history"][-1][1] > 0.9


_MIXED = textwrap.dedent("""
    import json, keras
    from sklearn.metrics import roc_auc_score
    keras.mixed_precision.set_global_policy("mixed_float16")  # what automl.devices.configure sets on a capable GPU
    from automl import data
    from automl.preprocess import encode_target, infer_schema, make_preprocessor
    from automl.spaces import MLP_WARM_STARTS
    from automl.training import KerasNetwork
    ds = data.load("diabetes"); schema = infer_schema(ds)
    x = make_preprocessor(schema, "dense").fit_transform(ds.frame.drop(columns=["Outcome"]), None).astype("float32")
    y = encode_target(schema, ds.frame["Outcome"])
    net = KerasNetwork(dict(MLP_WARM_STARTS[0]), "binary", epochs=30, seed=0).fit(x[:600], y[:600])
    print(json.dumps({"auc": roc_auc_score(y[600:], net.predict_proba(x[600:])[:, 1]),
                      "optimizer": type(net._optimizer(10)).__name__,
                      "compute": sorted({layer.compute_dtype for layer in net.model_.layers[1:]})}))
""")


def test_mixed_precision_trains_with_a_scaled_loss():
    """Under the mixed_float16 policy the compiled loop's networks compute in float16 and scale their loss (a
    LossScaleOptimizer; unscaled float16 gradients underflow), and still learn (on the CPU here: the policy is
    the same on a GPU)."""
    done = subprocess.run([sys.executable, "-c", _MIXED], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["optimizer"] == "LossScaleOptimizer" and "float16" in result["compute"]
    assert result["auc"] > 0.75


def test_folds_train_in_one_traced_graph_and_predict_as_if_each_traced_its_own(monkeypatch):
    """``reuse_graph``: the folds of a cross-validation train in the graph the first fold traced (a copy of the
    network, its variables and rows loaded in, the optimizer's first state restored), and each fold's own network
    then predicts exactly as one trained in a graph of its own: nothing of one fold reaches the next. Dropout,
    packed members, robust scaling and periodic embeddings, a GLM start."""
    from automl import steps
    from automl.evaluation import make_folds
    from automl.spaces import family_space

    ds = data.load("diabetes")
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    params = family_space("mlp")[1][2]  # the portfolio's packed ensemble of 8, robust and periodic
    assert params["dropout"] > 0 and params["ensemble_size"] == 8 and params["linear_start"]
    traced = []
    compiled = steps.compiled_steps
    monkeypatch.setattr(steps, "compiled_steps", lambda *a, **k: traced.append(1) or compiled(*a, **k))
    predictions: dict[bool, list[np.ndarray]] = {}
    for reuse in (False, True):
        traced.clear()
        predictions[reuse], models = [], []
        for train, test in make_folds(y, "binary", 3, 0):
            pre = make_preprocessor(schema, "network")
            net = KerasNetwork(params, "binary", epochs=3, validation_share=0.15, reuse_graph=reuse)
            net.fit(pre.fit_transform(x.iloc[train], y[train]), y[train])
            predictions[reuse].append(net.predict_proba(pre.transform(x.iloc[test])))
            models.append(net.model_)
        assert len(traced) == (1 if reuse else 3)
        copies = {id(entry[1]) for entry in steps._REUSABLE.values()}
        assert len({id(m) for m in models} - copies) == 3, "each fold keeps a network of its own"
    for alone, reused in zip(predictions[False], predictions[True], strict=True):
        np.testing.assert_array_equal(alone, reused)
