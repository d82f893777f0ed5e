"""Model folders: atomic saves, the same predictions in a fresh process, cards that name their protocol."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from automl import export
from automl.data import load
from automl.evaluation import cross_validate, make_folds
from automl.export import FORMAT_VERSION, load_model, save_model
from automl.models import BaggedModel, reference_candidates
from automl.preprocess import encode_target, infer_schema
from conftest import REPO, subprocess_env, tree_digest

CV = {"protocol": "cv", "nfolds": 3, "rows_scored": 768, "seed": 0,
      "label": "3-fold cross-validation, out-of-fold predictions (seed 0)"}


@pytest.fixture(scope="module")
def glm() -> tuple[BaggedModel, pd.DataFrame]:
    """Logistic regression cross-validated on Pima (3 folds): a real bag of fold models, no TensorFlow."""
    ds = load("diabetes")
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    candidate = next(c for c in reference_candidates(schema.task, 0, n_jobs=1) if c.algo == "GLM")
    return cross_validate(candidate, x, y, schema, make_folds(y, schema.task, 3, seed=0)).model, x


def test_a_saved_model_predicts_the_same_in_a_fresh_process(glm, tmp_path):
    model, x = glm
    save_model(model, tmp_path / "GLM_1", CV)
    x.to_csv(tmp_path / "rows.csv", index=False)
    code = ("import sys, numpy as np, pandas as pd; from automl.export import load_model; "
            "m = load_model(sys.argv[1]); np.save(sys.argv[3], m.predict_proba(pd.read_csv(sys.argv[2]))); "
            "assert 'tensorflow' not in sys.modules, 'loading a scikit-learn model imported TensorFlow'")
    done = subprocess.run([sys.executable, "-c", code, tmp_path / "GLM_1", tmp_path / "rows.csv",
                           tmp_path / "fresh.npy"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = np.load(tmp_path / "fresh.npy")
    assert fresh.shape == (len(x), 2)
    np.testing.assert_allclose(fresh, model.predict_proba(x), rtol=1e-12, atol=1e-12)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_model_json_names_the_protocol_that_scored_its_metrics(glm, tmp_path):
    model, x = glm
    save_model(model, tmp_path / "cv", CV, extra={"dataset": {"name": "diabetes"}})
    card = json.loads((tmp_path / "cv" / "model.json").read_text())
    assert card["format"] == FORMAT_VERSION and card["model_id"] == "GLM_1" and card["algo"] == "GLM"
    assert (card["task"], card["target"], card["classes"]) == ("binary", "Outcome", [0, 1])
    assert card["input_columns"] == model.schema.features == list(x.columns)
    assert card["metrics"] == pytest.approx(model.metrics) and 0.7 < card["metrics"]["auc"] < 0.95
    assert card["evaluation"] == CV
    assert (card["kind"], card["n_folds"], card["prediction"]) == ("bagged", 3, "mean of the fold models")
    assert card["hyperparameters"] == model.params and card["dataset"] == {"name": "diabetes"}
    assert {"python", "numpy", "scikit-learn", "automl"} <= set(card["versions"])

    # Scored on a user's leaderboard frame: the card holds that frame's metrics, labelled as such.
    frame = {"protocol": "leaderboard_frame", "source": "lb.csv", "rows_scored": 100,
             "label": "leaderboard frame lb.csv, 100 rows"}
    save_model(model, tmp_path / "lb", frame, metrics={"auc": 0.5, "logloss": 0.7})
    card = json.loads((tmp_path / "lb" / "model.json").read_text())
    assert card["evaluation"] == frame and card["metrics"] == {"auc": 0.5, "logloss": 0.7}


def test_an_evaluation_that_names_no_protocol_is_refused(glm, tmp_path):
    with pytest.raises(ValueError, match=r"evaluation needs \['label'\]"):
        save_model(glm[0], tmp_path / "GLM_1", {"protocol": "cv"})
    assert list(tmp_path.iterdir()) == []


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_save_leaves_no_half_folder(glm, tmp_path, monkeypatch, existing):
    model = glm[0]
    target = tmp_path / "GLM_1"
    if existing:
        save_model(model, target, CV)
    before = tree_digest(target) if existing else None
    calls = []
    real_dump = export.joblib.dump

    def dump_then_fail(value, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 3:  # fold 0 written whole, fold 1 half: the disk fills up mid-save
            raise Boom("disk full")
        return real_dump(value, filename, *args, **kwargs)

    monkeypatch.setattr(export.joblib, "dump", dump_then_fail)
    with pytest.raises(Boom):
        save_model(model, target, CV)
    assert len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == (["GLM_1"] if existing else [])
    if existing:
        assert tree_digest(target) == before
        monkeypatch.undo()
        assert load_model(target).predict_proba(glm[1].head(5)).shape == (5, 2)
