"""Stacked ensembles: non-negative metalearner, out-of-fold scoring, export and fresh-process predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from automl import AutoML, data
from automl.ensembles import GreedySelection, Metalearner, stack
from automl.evaluation import cross_validate, make_folds
from automl.metrics import get
from automl.models import reference_candidates
from automl.preprocess import encode_target, infer_schema
from conftest import REPO, run_module


@pytest.fixture(scope="module")
def bases():
    ds = data.load("diabetes")
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    folds = make_folds(y, "binary", 5, seed=1)
    evaluated = [cross_validate(c, x, y, schema, folds) for c in reference_candidates("binary", 1)
                 if c.algo in ("GLM", "GBM")]
    return evaluated, x, y, schema, folds


def test_metalearner_weights_are_non_negative_and_ignore_a_bad_base():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    good = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=500))))
    anti = 1 - good  # a base that is perfectly wrong-way round: a negative weight would use it
    preds = [np.column_stack([1 - q, q]) for q in (good, anti)]
    meta = Metalearner("binary").fit(preds, y)
    assert (meta.weights_ >= 0).all()
    assert meta.weights_[0] > 0.5 and meta.weights_[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_the_metalearners_gradient_is_its_losss(task):
    """L-BFGS-B gets the gradient: its finite differences had refused a point a hair outside a bound ("`x0`
    violates bound constraints", a stack of mpls_stops at 120 s)."""
    from scipy.optimize import approx_fprime

    rng = np.random.default_rng(1)
    k = 2 if task == "binary" else 3
    y = rng.integers(0, k, 400)
    preds = []
    for noise in (1.0, 2.0, 4.0):
        logits = 2 * np.eye(k)[y] + rng.normal(scale=noise, size=(400, k))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        preds.append(e / e.sum(axis=1, keepdims=True))
    meta = Metalearner(task)
    z = meta._features(preds)
    for theta in (np.array([0.3, 0.2, 0.5, 0.1]), np.array([1.0, 0.0, 2.0, -0.4])):
        numeric = approx_fprime(theta, lambda t, z, y: meta._objective(t, z, y)[0], 1e-7, z, y)
        if task == "multiclass":
            numeric[-1] = 0.0  # a blend of probabilities has no intercept
        assert np.allclose(meta._objective(theta, z, y)[1], numeric, atol=1e-5)


def test_multiclass_metalearner_weights_are_shares_that_favour_the_better_bases():
    # Its L2 term once shrank every weight to ~1e-6 (the blend is normalised, so nothing stopped it).
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)

    def member(noise: float) -> np.ndarray:
        logits = 3 * np.eye(3)[y] + rng.normal(scale=noise, size=(600, 3))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    meta = Metalearner("multiclass").fit([member(1.0), member(1.2), member(6.0)], y)
    assert meta.weights_.sum() == pytest.approx(1.0) and (meta.weights_ >= 0).all()
    assert meta.weights_[0] > meta.weights_[1] > 0.1 and meta.weights_[2] < 0.05


@pytest.mark.parametrize(("metric", "task"), [("auc", "binary"), ("logloss", "binary"), ("rmse", "regression")])
def test_greedy_selection_never_scores_below_its_best_member_and_can_beat_it(metric, task):
    rng = np.random.default_rng(3)
    m = get(metric, task)
    y = rng.integers(0, 2, 400) if task == "binary" else rng.normal(size=400)
    signal = (2 * y - 1) if task == "binary" else y
    # Members with independent errors of different sizes, and a useless one: a blend averages errors away.
    raw = [signal + rng.normal(scale=s, size=400) for s in (1.0, 1.2, 1.5, 8.0)]
    preds = [np.column_stack([1 - q, q]) for q in (1 / (1 + np.exp(-r)) for r in raw)] if task == "binary" else raw
    member_scores = [m.sign() * m.fn(y, p) for p in preds]
    greedy = GreedySelection(task, metric).fit(preds, y)
    blend = m.sign() * m.fn(y, greedy.predict(preds))
    assert greedy.weights_.sum() == pytest.approx(1.0) and (greedy.weights_ >= 0).all()
    assert blend > max(member_scores)  # strictly better than the best member here, never below it
    assert greedy.weights_[3] < greedy.weights_[0]  # the noisy member gets less weight than the best


@pytest.mark.parametrize("max_rows", [50_000, 30])  # 30: fitted on a sample of the 100 rows
def test_greedy_selection_copies_a_member_that_cannot_be_improved(max_rows, monkeypatch):
    monkeypatch.setattr("automl.ensembles.GREEDY_MAX_ROWS", max_rows)
    y = np.array([0, 1] * 50)
    perfect = np.column_stack([1 - y, y]).astype(float)
    noise = np.full_like(perfect, 0.5)
    greedy = GreedySelection("binary", "auc").fit([noise, perfect], y)
    assert greedy.weights_.tolist() == [0.0, 1.0]


def test_greedy_selection_breaks_ties_of_an_error_count_by_log_loss():
    """Two members that classify every row right, one hesitantly (0.4 on the true class) and one surely (0.9):
    mean per-class error ties them (0), and the one with the better probabilities is chosen, not the first."""
    y = np.tile([0, 1, 2], 30)

    def member(p_true: float) -> np.ndarray:
        return np.where(np.eye(3)[y] == 1, p_true, (1 - p_true) / 2)

    greedy = GreedySelection("multiclass", "mean_per_class_error").fit([member(0.4), member(0.9)], y)
    assert greedy.weights_.tolist() == [0.0, 1.0]


def test_stack_scores_out_of_fold(bases):
    evaluated, x, y, schema, folds = bases
    ens = stack("StackedEnsemble_AllModels", evaluated, y, schema, folds)
    assert ens.model.metrics["auc"] == pytest.approx(roc_auc_score(y, ens.oof[:, 1]))
    # The ensemble is scored by the same protocol: within noise of its bases, not above them by a leak.
    best_base = max(e.model.metrics["auc"] for e in evaluated)
    assert abs(ens.model.metrics["auc"] - best_base) < 0.02
    assert set(ens.model.params["weights"]) == {e.model.model_id for e in evaluated}
    greedy = stack("StackedEnsemble_Greedy", evaluated, y, schema, folds, get("auc", "binary"))
    assert greedy.model.metrics["auc"] == pytest.approx(roc_auc_score(y, greedy.oof[:, 1]))
    assert abs(greedy.model.metrics["auc"] - best_base) < 0.02  # nested: fitted on other folds than it is scored


def test_a_greedy_ensemble_that_loses_nested_becomes_its_best_member():
    """Constructed level-one data where nesting hurts: A is exact on fold 1's rows and far off on fold 2's, B the
    other way round, C a little off everywhere (the best member). Fitted on one fold, the selection copies the
    exact member there and is scored where it is far off; the ensemble must not rank below C."""
    from types import SimpleNamespace

    from automl.evaluation import Evaluated
    from automl.preprocess import Schema

    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    fold_1, fold_2 = np.arange(100), np.arange(100, 200)
    far, near = rng.normal(scale=3.0, size=200), rng.normal(scale=0.5, size=200)
    members = {"A": y + np.where(np.isin(np.arange(200), fold_1), 0.0, far),
               "B": y + np.where(np.isin(np.arange(200), fold_2), 0.0, far), "C": y + near}
    bases = [Evaluated(SimpleNamespace(model_id=k), p, 1.0, 0.0) for k, p in members.items()]
    rmse = get("rmse", "regression")
    ens = stack("StackedEnsemble_Greedy", bases, y, Schema("regression", "y", [], [], []),
                [(fold_2, fold_1), (fold_1, fold_2)], rmse)
    assert ens.model.metrics["rmse"] == pytest.approx(rmse.fn(y, members["C"]))
    assert ens.model.params["weights"] == {"A": 0.0, "B": 0.0, "C": 1.0}
    assert ens.model.params["fallback"].startswith("C alone")
    np.testing.assert_allclose(ens.model.metalearner.predict(list(members.values())), members["C"])


def test_ensembles_rank_export_and_predict_in_a_fresh_process(tmp_path):
    frame = pd.read_csv(REPO / "datasets" / "titanic.csv")
    aml = AutoML(max_runtime_secs=60, output_dir=tmp_path / "run", verbose=False,
                 include_algos=["GLM", "GBM", "DRF", "StackedEnsemble"]).fit(frame, target="Survived")
    board = aml.leaderboard
    assert {"StackedEnsemble_AllModels", "StackedEnsemble_BestOfFamily"} & set(board["model_id"])
    assert "StackedEnsemble_Greedy" in set(board["model_id"])
    stacked = next(m for m in board["model_id"] if m.startswith("StackedEnsemble_") and m != "StackedEnsemble_Greedy")
    frame.head(50).to_csv(tmp_path / "rows.csv", index=False)
    for ens_id in (stacked, "StackedEnsemble_Greedy"):  # both metalearners export and predict in a new process
        card = json.loads((tmp_path / "run" / "models" / ens_id / "model.json").read_text())
        assert card["kind"] == "stacked_ensemble" and card["base_models"]
        proc = run_module("automl.predict", tmp_path / "run" / "models" / ens_id, tmp_path / "rows.csv",
                          "--output", tmp_path / "preds.csv", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        fresh = pd.read_csv(tmp_path / "preds.csv")
        in_process = next(e.model for e in aml.evaluated if e.model.model_id == ens_id).predict(frame.head(50))
        np.testing.assert_allclose(fresh["p_1"], in_process["p_1"], rtol=1e-6)


class _Noise:
    """A classifier that has learned nothing: seeded random probabilities."""

    def fit(self, x, y, deadline=None):
        return self

    def predict_proba(self, x):
        p = np.random.default_rng(len(x)).uniform(size=len(x))
        return np.column_stack([1 - p, p])


def _level_two_state(tmp_path, oofs: dict[str, np.ndarray | None]):
    """A diabetes run's state whose ranked models are ``oofs``: a real uninformative model where None, else a
    stand-in with those out-of-fold predictions."""
    from automl.config import RunConfig
    from automl.evaluation import Evaluated
    from automl.metrics import score_all
    from automl.models import BaggedModel, Candidate
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=60, output_dir=str(tmp_path),
                                         verbose=False))
    for model_id, oof in oofs.items():
        if oof is None:
            state.evaluated.append(cross_validate(Candidate(model_id, "GBM", _Noise, features="dense"), state.x,
                                                  state.y, state.schema, state.protocol.folds))
        else:
            model = BaggedModel(model_id, "GBM", state.schema, [], {}, score_all("binary", state.y, oof))
            state.evaluated.append(Evaluated(model, oof, 1000.0, 0.01))
    return state


def test_a_level_two_stack_joins_the_board_when_it_beats_level_one_out_of_fold(tmp_path):
    """Bases that learned nothing: the level-2 model reads the features too, so it beats them out of fold; it
    predicts from raw rows through its bases, and round-trips through export."""
    from automl.ensembles import stack_level_two
    from automl.export import load_model, save_model

    state = _level_two_state(tmp_path, {"NOISE_1": None, "NOISE_2": None})
    result = stack_level_two(state)
    assert result is not None and result in state.evaluated
    best_base = max(e.model.metrics["auc"] for e in state.evaluated[:2])
    assert result.model.metrics["auc"] > best_base + 0.1  # diabetes' signal, not the noise
    rows = state.x.head(30)
    proba = result.model.predict_proba(rows)
    assert proba.shape == (30, 2) and np.allclose(proba.sum(axis=1), 1)
    for base in state.evaluated[:2]:
        save_model(base.model, tmp_path / "models" / base.model.model_id, state.protocol.describe())
    save_model(result.model, tmp_path / "models" / "L2", state.protocol.describe(), saved=tmp_path / "models",
               metrics=result.model.metrics)
    np.testing.assert_allclose(load_model(tmp_path / "models" / "L2").predict_proba(rows), proba, rtol=1e-6)


def test_a_level_two_stack_that_does_not_beat_level_one_is_not_used(tmp_path):
    """A base already perfect out of fold: no level-2 model can beat it, so none joins the board."""
    from automl.ensembles import stack_level_two

    state = _level_two_state(tmp_path, {"NOISE_1": None, "PERFECT": None})
    perfect = np.eye(2)[state.y]
    state.evaluated[1].oof[:] = perfect
    state.evaluated[1].model.metrics.update(auc=1.0)
    n = len(state.evaluated)
    assert stack_level_two(state) is None and len(state.evaluated) == n
    assert any("not used" in r["message"] for r in state.events.rows)
