"""Network options for tables: quantile and robust scaling, periodic embeddings of numeric columns and packed
ensembles, in the searched space; a fit that holds out rows keeps its best epoch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import QuantileTransformer

from automl.config import RunConfig
from automl.data import load
from automl.evaluation import cross_validate, make_folds
from automl.export import save_model
from automl.models import Candidate
from automl.preprocess import encode_target, infer_schema
from automl.search import search_job
from automl.spaces import MLP_SPACE, MLP_WARM_STARTS
from automl.state import start
from conftest import REPO, subprocess_env

OPTIONS = {"input_scaling": "quantile", "numeric_embedding": "periodic", "lr_schedule": "cosine",
           "label_smoothing": 0.1}


@pytest.fixture(scope="module")
def pima():
    ds = load("diabetes")
    schema = infer_schema(ds)
    return ds, schema, ds.frame[schema.features], encode_target(schema, ds.frame[schema.target])


def test_quantile_scaling_is_scikit_learns_transform(pima):
    from automl.layers import NumericInputs, fit_quantiles

    _, _, x, _ = pima
    values = x.to_numpy("float32")
    coin = np.random.default_rng(0).integers(0, 2, len(values)).astype("float32")  # a two-valued column
    matrix = np.column_stack([coin, values])
    fitted = matrix[:300]  # fewer rows than quantiles kept: the stored quantiles are padded
    layer = NumericInputs(list(range(1, 9)), 9, scaling="quantile")
    layer.build(matrix.shape)
    layer.set_quantiles(fit_quantiles(fitted[:, 1:]))
    out = np.asarray(layer(matrix))

    reference = QuantileTransformer(n_quantiles=300, output_distribution="normal", random_state=0).fit(fitted[:, 1:])
    reference.quantiles_ = reference.quantiles_.astype("float32").astype("float64")  # as the layer stores them
    # Integer columns with ties (pregnancies, age), zeros at the minimum (insulin), values beyond the fitted
    # range (rows 300 on): all as scikit-learn maps them, within float32 rounding.
    np.testing.assert_allclose(out[:, :8], reference.transform(values), atol=2e-5)
    np.testing.assert_array_equal(out[:, 8], coin)  # the two-valued column passes through, after the numeric ones


@pytest.mark.parametrize("options", [OPTIONS, {**OPTIONS, "input_scaling": "robust", "ensemble_size": 8}],
                         ids=["quantile", "robust-packed"])
def test_every_option_trains_learns_and_predicts_the_same_in_a_fresh_process(pima, tmp_path, options):
    from automl.training import KerasNetwork

    _, schema, x, y = pima
    params = {**MLP_WARM_STARTS[0], **options}
    candidate = Candidate("MLP_1", "DeepLearning", lambda: KerasNetwork(params, "binary", epochs=15, seed=0), params)
    model = cross_validate(candidate, x, y, schema, make_folds(y, schema.task, 3, seed=0)).model
    assert model.metrics["auc"] > 0.75, "a network with every option learns Pima"
    network = model.folds[0].estimator.model_  # the quantile scaler, then the part that trains
    layers = [inner for layer in network.layers for inner in getattr(layer, "layers", [layer])]
    layer = next(layer for layer in layers if type(layer).__name__ == "NumericInputs" and layer.embedding != "none")
    assert layer.columns == list(range(8)) and layer.embedding == "periodic"  # missing indicators are not numeric

    save_model(model, tmp_path / "MLP_1", {"protocol": "cv", "nfolds": 3, "rows_scored": len(x), "seed": 0,
                                           "label": "3-fold cross-validation"})
    x.head(100).to_csv(tmp_path / "rows.csv", index=False)
    code = ("import sys, numpy as np, pandas as pd; from automl.export import load_model; "
            "m = load_model(sys.argv[1]); np.save(sys.argv[3], m.predict_proba(pd.read_csv(sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, tmp_path / "MLP_1", tmp_path / "rows.csv",
                           tmp_path / "fresh.npy"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "fresh.npy"), model.predict_proba(x.head(100)), atol=1e-6)


def test_a_packed_ensemble_predicts_the_mean_of_its_members(pima):
    import keras

    from automl.layers import MemberMean
    from automl.training import KerasNetwork

    _, _, x, y = pima
    values = x.fillna(0).to_numpy("float32")
    values = (values - values.mean(axis=0)) / values.std(axis=0)
    params = {**MLP_WARM_STARTS[0], "ensemble_size": 8, "batch_norm": True}
    net = KerasNetwork(params, "binary", epochs=10, seed=3).fit(values[:600], y[:600])
    mean = next(layer for layer in net.model_.layers if isinstance(layer, MemberMean))
    members = np.asarray(keras.Model(net.model_.inputs, mean.input)(values[600:]))  # (rows, 8, 1)
    assert members.shape == (168, 8, 1)
    spread = members[:, :, 0].std(axis=1)
    assert spread.mean() > 1e-3, "the members start from their own weights and learn apart"
    np.testing.assert_allclose(net.predict_proba(values[600:])[:, 1], members[:, :, 0].mean(axis=1), atol=1e-6)
    assert roc_auc_score(y[600:], net.predict_proba(values[600:])[:, 1]) > 0.75


def test_the_robust_scaler_is_fitted_on_the_rows_a_network_trains_on(pima):
    from automl.layers import SMOOTH_CLIP, NumericInputs
    from automl.training import KerasNetwork

    _, _, x, y = pima
    values = x.fillna(0).to_numpy("float32")
    net = KerasNetwork({**MLP_WARM_STARTS[0], "input_scaling": "robust"}, "binary", epochs=5, seed=0,
                       validation_share=0.5)
    rows = np.arange(len(values), dtype="float32")[:, None]
    held_out_rows = net._held_out(rows, y)[2][:, 0].astype(int)  # the split fit() makes: by seed, not by values
    values[held_out_rows, 1] += 1000.0  # the held-out rows' glucose far off: a scaler fitted on them would show it
    trained, _, held_out, _ = net._held_out(values, y)
    net.fit(values, y)
    scaler = next(layer for layer in net.model_.layers if isinstance(layer, NumericInputs))
    assert scaler.scaling == "robust"
    glucose = scaler.columns.index(1)
    median_trained = np.median(trained[:, 1])
    assert np.asarray(scaler.center)[glucose] == pytest.approx(median_trained)
    assert np.median(values[:, 1]) - median_trained > 1.0 and np.median(held_out[:, 1]) - median_trained > 900.0
    out = np.asarray(scaler(values))[:, glucose]
    q25, q75 = np.quantile(trained[:, 1], [0.25, 0.75])
    z = (values[:, 1] - median_trained) / (q75 - q25)
    np.testing.assert_allclose(out, z / np.sqrt(1 + (z / SMOOTH_CLIP) ** 2), rtol=1e-4, atol=1e-5)
    assert np.abs(out).max() < SMOOTH_CLIP  # smoothly clipped: outliers stay inside the bound


def test_a_refit_that_holds_out_rows_keeps_its_best_epoch():
    """At a learning rate that overfits, the last epoch is not the best on the held-out rows: the weights of the
    best are restored, as the history of held-out scores says."""
    from automl.training import KerasNetwork

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)).astype("float32")
    y = (x[:, 0] + rng.normal(scale=2.0, size=400) > 0).astype(int)  # a weak signal, much noise: easy to overfit
    params = {**MLP_WARM_STARTS[0], "units": 256, "dropout": 0.0, "l2": 1e-6, "learning_rate": 1e-2,
              "batch_size": 16}
    net = KerasNetwork(params, "binary", epochs=60, seed=0, validation_share=0.25).fit(x, y)
    _, _, held_out, monitor = net._held_out(x, y)
    scores = dict(net.history_)
    best = max(scores, key=scores.get)
    assert net.best_epoch_ == best and best < max(scores), net.history_
    assert monitor(net.predict_proba(held_out)) == pytest.approx(scores[best], abs=1e-6)


def test_unseen_categories_map_to_the_shared_vector(tmp_path):
    """Codes: 0 for every level the training rows lacked; an embedding network gives rows that differ only in such
    levels one prediction, and the same after export and reload."""
    import keras

    import automl.layers  # noqa: F401  registers the layers for loading
    from automl.encoders import CategoryCodes
    from automl.training import KerasNetwork

    rng = np.random.default_rng(0)
    colours = rng.choice(["red", "green", "blue", "teal"], 600, p=[0.4, 0.3, 0.29, 0.01])  # teal: 6 rows at most
    frame = pd.DataFrame({"colour": colours, "size": rng.normal(size=600)})
    y = ((frame["colour"] == "red") ^ (frame["size"] > 0)).to_numpy(int)
    codes = CategoryCodes().fit(frame[["colour"]])
    unseen = pd.DataFrame({"colour": ["purple", "black", None, "red"]})
    got = codes.transform(unseen)[:, 0]
    assert got[0] == got[1] == 0.0 and got[2] == 0.0 and got[3] > 0  # unseen levels (missing too, never seen) → 0

    x = np.column_stack([frame[["size"]].to_numpy("float32"), codes.transform(frame[["colour"]])])
    params = {**MLP_WARM_STARTS[0], "categorical_embedding": "embedding"}
    net = KerasNetwork(params, "binary", epochs=20, seed=0, n_codes=1).fit(x, y)
    assert roc_auc_score(y, net.predict_proba(x)[:, 1]) > 0.9, "the embedding tells red from the rest"
    rows = np.column_stack([np.full(3, 0.5, "float32"), codes.transform(unseen.head(3).assign(colour=["purple",
                                                                                                     "black", "red"]))])
    p = net.predict_proba(rows)[:, 1]  # purple and black: one vector; red its own
    assert p[0] == p[1] and abs(p[0] - p[2]) > 1e-3
    net.model_.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(reloaded(rows))[:, 0], p, atol=1e-6)


def test_periodic_embeddings_learn_what_a_linear_input_cannot(pima):
    """A target that flips with a numeric value's fine position: an embedding sees it, a plain input barely."""
    from automl.training import KerasNetwork

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2)).astype("float32")
    y = (np.sin(6.0 * x[:, 0]) > 0).astype(int)  # ~4 changes of class per standard deviation
    base = {**MLP_WARM_STARTS[0], "n_layers": 1, "units": 32, "dropout": 0.0, "batch_size": 64,
            "learning_rate": 3e-3}

    def auc(params):
        net = KerasNetwork(params, "binary", epochs=30, seed=0).fit(x[:2000], y[:2000])
        return roc_auc_score(y[2000:], net.predict_proba(x[2000:])[:, 1])

    plain, periodic = auc(base), auc({**base, "numeric_embedding": "periodic"})
    assert periodic > 0.9 and periodic > plain + 0.1, (plain, periodic)


def test_a_population_search_searches_every_network_option(tmp_path):
    """A real population search (4 members a round): every option of the space takes more than one value. The
    members of a round share batch size, width, input scaling and embedding (one compiled graph); TPE, seeing
    all of a round share them, kept the first round's, and one round admitted every trial: 32 trials, one batch
    size, one input scaling. Rounds now turn over by count and try the shares no trial has tried. On titanic, whose
    categorical columns add ``categorical_embedding``; packed ensembles and embedding networks train alone."""
    from automl import search
    from automl.spaces import CATEGORICAL_EMBEDDING

    state = start(RunConfig.from_options(dataset="titanic", output_dir=str(tmp_path), verbose=False, workers=1,
                                         population=4, max_models=16, max_runtime_secs=120))
    assert search_job(state).space == (*MLP_SPACE, CATEGORICAL_EMBEDDING)
    trials = search.search_slice(state, state.budget.clock() + 90)
    assert len(trials) == 16
    for option in (*MLP_SPACE, CATEGORICAL_EMBEDDING):
        values = {repr(t.params[option.name]) for t in trials}
        offered = len(getattr(option, "choices", (0, 1)))  # linear_start has one value: every network has it
        assert len(values) == offered if offered == 1 else len(values) > 1, f"{option.name}: only {values} searched"
    failed = [t.error for t in trials if t.state == "FAIL"]
    assert not failed, failed


@pytest.mark.parametrize(("members", "scaling"), [(1, "standard"), (8, "robust"), (1, "quantile")])
def test_a_network_with_a_linear_start_starts_as_the_glm_and_round_trips(pima, members, scaling, tmp_path):
    """Before its first step the network predicts what the GLM fitted on its rows predicts (a packed one too: each
    member's part starts at zero; a scaled one too: its GLM reads the unscaled rows, as GLM_1 does), and it saves
    and loads as it is."""
    from automl.estimators import GLM_CS, LinearModel
    from automl.training import KerasNetwork

    _, _, x, y = pima
    values = x.fillna(0).to_numpy("float32")
    values = (values - values.mean(axis=0)) / values.std(axis=0)
    params = {**MLP_WARM_STARTS[0], "linear_start": True, "ensemble_size": members, "input_scaling": scaling}
    net = KerasNetwork(params, "binary", epochs=0, seed=0).fit(values, y)
    glm = LinearModel("binary", Cs=GLM_CS).fit(values, y)
    np.testing.assert_allclose(net.predict_proba(values), glm.predict_proba(values), atol=1e-5)
    net.save(tmp_path)
    np.testing.assert_allclose(KerasNetwork.load(tmp_path).predict_proba(values), net.predict_proba(values), atol=1e-6)


def test_a_linear_start_is_the_glm_of_the_rows_given_and_scored_as_epoch_zero():
    """Holding rows out to stop early (a fold's fit), the network starts as the GLM of every row it was given, as
    GLM_1's fold model is; given validation rows (a search trial), as the GLM of its training rows only, never of
    the rows it is scored on. The start's held-out score is the history's epoch 0, kept as the network when no
    epoch after it does better."""
    from automl.estimators import GLM_CS, LinearModel
    from automl.metrics import get
    from automl.training import KerasNetwork

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 10)).astype("float32")
    y = (x[:, 0] - x[:, 1] + rng.normal(scale=1.5, size=400) > 0).astype(int)
    params = {**MLP_WARM_STARTS[0], "units": 256, "dropout": 0.0, "l2": 1e-6, "learning_rate": 1e-2,
              "linear_start": True}
    net = KerasNetwork(params, "binary", epochs=30, seed=0, validation_share=0.25).fit(x, y)
    _, _, held_out, monitor = net._held_out(x, y)
    epochs, scores = zip(*net.history_, strict=True)
    glm = LinearModel("binary", Cs=GLM_CS).fit(x, y)
    assert epochs[0] == 0 and scores[0] == pytest.approx(monitor(glm.predict_proba(held_out)), abs=1e-5)
    assert monitor(net.predict_proba(held_out)) == pytest.approx(max(scores), abs=1e-6)
    assert net.best_epoch_ == max((e for e, s in net.history_ if s == max(scores)))

    loss = get("logloss", "binary")
    trial = KerasNetwork(params, "binary", epochs=0, seed=0).fit(
        x[:300], y[:300], x[300:], lambda p: -loss.fn(y[300:], p))
    glm = LinearModel("binary", Cs=GLM_CS).fit(x[:300], y[:300])
    assert trial.history_[0][1] == pytest.approx(-loss.fn(y[300:], glm.predict_proba(x[300:])), abs=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_cross_validation_keeps_a_networks_glm_start_where_it_does_as_well_out_of_fold(pima, tie):
    """A GLM-started network's folds start as the GLM of all their rows (GLM_1's fold models); out of fold the
    network scores at least what those starts score, and where they score as well (a tie, by a metric that
    sees no difference) every fold's model is its start."""
    from automl.estimators import GLM_CS, LinearModel
    from automl.metrics import Metric, get
    from automl.preprocess import make_preprocessor
    from automl.training import KerasNetwork

    _, schema, x, y = pima
    params = {**MLP_WARM_STARTS[0], "linear_start": True, "learning_rate": 3e-2}
    candidate = Candidate("MLP_1", "MLP", lambda: KerasNetwork(params, "binary", epochs=30, seed=0,
                                                                validation_share=0.25), params)
    folds = make_folds(y, schema.task, 3, seed=0)
    metric = Metric("tie", lambda truth, pred: 0.0, True, ("binary",)) if tie else get("auc", "binary")
    model = cross_validate(candidate, x, y, schema, folds, metric=metric).model
    starts = np.zeros(len(y))
    for train, test in folds:
        pre = make_preprocessor(schema)
        glm = LinearModel("binary", Cs=GLM_CS).fit(pre.fit_transform(x.iloc[train], y[train]).astype("float32"),
                                                   y[train])
        starts[test] = glm.predict_proba(pre.transform(x.iloc[test]).astype("float32"))[:, 1]
    networks = [fold.estimator for fold in model.folds]
    assert all(network.start_weights_ is None for network in networks)  # not carried in the exported bag
    if tie:
        assert all(network.best_epoch_ == 0 for network in networks)
        assert model.metrics["auc"] == pytest.approx(roc_auc_score(y, starts), abs=1e-4)
    else:
        assert model.metrics["auc"] >= roc_auc_score(y, starts) - 1e-4


def test_a_networks_glm_start_is_glm_1s_fold_model_when_it_was_fitted_on_the_same_rows(pima, monkeypatch):
    """GLM_1's fold models are remembered by their rows: a network started as the GLM of the same rows (its fold
    of the same cross-validation) takes the model itself and fits none."""
    from automl.estimators import GLM_CS, LinearModel
    from automl.training import KerasNetwork

    _, _, x, y = pima
    values = x.fillna(0).to_numpy("float32")
    values = (values - values.mean(axis=0)) / values.std(axis=0)
    glm = LinearModel("binary", Cs=GLM_CS).fit(values[:500], y[:500])

    def refuse(*args, **kwargs):
        raise AssertionError("the start fitted a GLM of its own")

    monkeypatch.setattr(LinearModel, "fit", refuse)
    params = {**MLP_WARM_STARTS[0], "linear_start": True}
    net = KerasNetwork(params, "binary", epochs=0, seed=0).fit(values[:500], y[:500])
    np.testing.assert_allclose(net.predict_proba(values[500:]), glm.predict_proba(values[500:]), atol=1e-5)
