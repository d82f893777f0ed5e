"""Single models behind two zero-shot choices, on ``bench/suite.py``'s fixed splits: the skewed-target GBMs
(``automl.models.SKEWED_PORTFOLIO``) on diamonds, and the logistic GLM's penalty path (``GLM_CS``) on the
classification tables.

Each model is the package's own (``GradientBoosting``, ``LinearModel``) on the package's preprocessing
(``make_preprocessor``, "trees" for LightGBM, "dense" for the GLM) fitted on the split's training rows;
LightGBM early-stops on 10 % of them as the reference models do. One JSON line per model with its test
metric and fit seconds; for diamonds also ``ensemble`` lines, the plain mean of a set of the models (what the
new members add to GBM_1..3).

    python bench/portfolio.py [--out /tmp/automl-suite] [--part gbm,glm]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import log
from sklearn.metrics import log_loss, roc_auc_score
from suite import DATASETS, cached_split

from automl.data import load
from automl.estimators import GLM_CS, GradientBoosting, LinearModel, boosting_params
from automl.models import GBM_PORTFOLIO, SKEWED_PORTFOLIO
from automl.preprocess import encode_target, infer_schema, make_preprocessor

#: GBM_1 on the log of the target, the skewed-target member before SKEWED_PORTFOLIO.
FORMER_GBM_4 = {**GBM_PORTFOLIO[0], "target": "log"}


def _split(out: Path, name: str, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The split's preprocessed training and test matrices and targets."""
    dataset = DATASETS[name]
    train_csv, test_csv = cached_split(out / "data" / name, dataset)
    train, test = (load(str(p), dataset.target, dataset.task) for p in (train_csv, test_csv))
    schema = infer_schema(train)
    pre = make_preprocessor(schema, kind)
    y, y_test = (encode_target(schema, d.frame[d.target]) for d in (train, test))
    x = pre.fit_transform(train.frame.drop(columns=[train.target]), y)
    return x, y, pre.transform(test.frame.drop(columns=[test.target])), y_test


def gbm(out: Path) -> None:
    x, y, x_test, y_test = _split(out, "diamonds", "trees")
    models = {f"GBM_{i}": p for i, p in enumerate(GBM_PORTFOLIO, 1)}
    models |= {f"GBM_{i}": p for i, p in enumerate(SKEWED_PORTFOLIO, len(GBM_PORTFOLIO) + 1)}
    models["former GBM_4"] = FORMER_GBM_4
    preds = {}
    for name, point in models.items():
        params, patience, log_target = boosting_params(point)  # as reference_candidates builds them
        started = time.perf_counter()
        model = GradientBoosting("regression", params=params, patience=patience, log_target=log_target,
                                 seed=1).fit(x, y)
        preds[name] = model.predict(x_test)
        print(json.dumps({"bench": "portfolio", "dataset": "diamonds", "model": name, "params": point,
                          "rmse": round(float(np.sqrt(np.mean((preds[name] - y_test) ** 2))), 2),
                          "rounds": int(model.best_iteration_), "fit_s": round(time.perf_counter() - started, 1)}),
              flush=True)
    for members in (["GBM_1", "GBM_2", "GBM_3", "former GBM_4"], ["GBM_1", "GBM_2", "GBM_3", "GBM_4", "GBM_5"]):
        mean = np.mean([preds[m] for m in members], axis=0)
        print(json.dumps({"bench": "portfolio", "dataset": "diamonds", "ensemble": members,
                          "rmse": round(float(np.sqrt(np.mean((mean - y_test) ** 2))), 2)}), flush=True)


def glm(out: Path) -> None:
    for name in ("penguins", "diabetes", "titanic", "churn"):
        x, y, x_test, y_test = _split(out, name, "dense")
        for label, model in (("C=0.1", LinearModel(DATASETS[name].task, C=0.1)),
                             ("path", LinearModel(DATASETS[name].task, Cs=GLM_CS))):
            started = time.perf_counter()
            proba = model.fit(x, y).predict_proba(x_test)
            chosen = model.model_.C_ if hasattr(model.model_, "C_") else model.model_.C
            row = {"bench": "portfolio", "dataset": name, "model": f"GLM {label}", "C": float(np.ravel(chosen)[0]),
                   "logloss": round(float(log_loss(y_test, proba, labels=np.arange(proba.shape[1]))), 4),
                   "fit_s": round(time.perf_counter() - started, 2)}
            if proba.shape[1] == 2:
                row["auc"] = round(float(roc_auc_score(y_test, proba[:, 1])), 4)
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "automl-suite",
                        help="the suite's folder: its data/ splits are reused or written")
    parser.add_argument("--part", default="gbm,glm", help="comma-separated: gbm, glm")
    args = parser.parse_args()
    for part in args.part.split(","):
        log(f"portfolio: {part}")
        {"gbm": gbm, "glm": glm}[part](args.out)


if __name__ == "__main__":
    main()
