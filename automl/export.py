"""Export and load model directories: everything a model needs at predict time, in one folder.

Layout: ``model.json`` (card: schema, classes, metrics and the ``evaluation`` that scored
them, versions) and ``fold_<i>/`` with ``preprocessor.joblib`` and either ``model.joblib``
(scikit-learn) or ``model.keras`` + ``network.json`` (Keras); ``full/``, laid out like a fold, is the
model refit on all rows, when it was (it then makes the predictions). Loading needs only ``automl``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib

from automl.bagging import BaggedModel, FoldModel, Model
from automl.ensembles import LevelTwoEnsemble, StackedEnsemble
from automl.errors import InputError
from automl.io import atomic_dir, atomic_write_text
from automl.preprocess import Schema
from automl.training import KerasNetwork

__all__ = ["save_model", "load_model", "link_tree", "fitted_models", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_PACKAGES = ("automl", "scikit-learn", "pandas", "numpy", "tensorflow", "keras", "optuna")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def save_model(model: Model, path: Path, evaluation: Mapping[str, Any], extra: dict[str, Any] | None = None,
               saved: Path | None = None, *, metrics: dict[str, float] | None = None) -> None:
    """Write ``model`` to the folder ``path`` atomically (the old folder stays until the new is whole).

    ``model.json`` holds ``metrics`` (default: the model's own, from its cross-validation or
    holdout) and ``evaluation``, the JSON object naming the protocol that scored them: at
    least ``protocol`` and ``label``, as ``automl.evaluation.Protocol.describe()`` gives, or
    e.g. ``{"protocol": "leaderboard_frame", "source": ..., "rows_scored": ..., "label": ...}``
    with that frame's ``metrics``. A stacked ensemble's folder holds its metalearner and a
    full copy of each base model under ``bases/``, so the folder alone suffices to predict.
    Bases already written under ``saved/<model_id>`` are hard-linked from there instead of
    saved again; with ``metrics`` given they must be, since only the caller knows their scores.
    """
    card_evaluation = _evaluation(evaluation)
    with atomic_dir(path) as tmp:
        layout: dict[str, Any] = {"kind": "bagged", "n_folds": len(getattr(model, "folds", ()))}
        if isinstance(model, StackedEnsemble):
            layout = {"kind": "stacked_ensemble", "n_folds": 0,
                      "base_models": [b.model_id for b in model.bases]}
            joblib.dump(model.metalearner, tmp / "metalearner.joblib")
            for base in model.bases:
                if saved is not None and (saved / base.model_id / "model.json").exists():
                    link_tree(saved / base.model_id, tmp / "bases" / base.model_id)
                elif metrics is None:
                    save_model(base, tmp / "bases" / base.model_id, evaluation)
                else:
                    raise ValueError(f"base model {base.model_id} of {model.model_id} is not saved under {saved}; "
                                     "save the bases first, with their metrics from the same evaluation")
        for name, fold in fitted_models(model):
            _save_fold(fold, tmp / name)
        full = getattr(model, "full", None)
        if full is not None:
            layout["refit_rows"] = model.params.get("refit_rows")
        card = {
            "format": FORMAT_VERSION, "model_id": model.model_id, "algo": model.algo,
            "task": model.schema.task, "target": model.schema.target, "classes": model.schema.classes,
            "input_columns": model.schema.features, "schema": model.schema.to_json(),
            "metrics": model.metrics if metrics is None else metrics, "evaluation": card_evaluation,
            "hyperparameters": model.params,
            **layout, "prediction": "metalearner on the base models" if layout["n_folds"] == 0
            else "the model refit on all rows (full/); the metrics are the fold model's" if full is not None
            else "mean of the fold models",
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "versions": _versions(),
            **(extra or {}),
        }
        atomic_write_text(tmp / "model.json", json.dumps(card, indent=1, default=str))


def fitted_models(model: Model) -> list[tuple[str, FoldModel]]:
    """The fitted models a save writes, each with its folder's name: every fold's, then the refit on all rows."""
    fits = [(f"fold_{i}", fold) for i, fold in enumerate(getattr(model, "folds", ()))]
    full = getattr(model, "full", None)
    return fits + ([("full", full)] if full is not None else [])


def _save_fold(fold: FoldModel, folder: Path) -> None:
    folder.mkdir()
    joblib.dump(fold.preprocessor, folder / "preprocessor.joblib")
    if isinstance(fold.estimator, KerasNetwork):
        fold.estimator.save(folder)
    else:
        joblib.dump(fold.estimator, folder / "model.joblib")


def _load_fold(folder: Path) -> FoldModel:
    pre = joblib.load(folder / "preprocessor.joblib")
    if (folder / "model.keras").exists():
        return FoldModel(pre, KerasNetwork.load(folder))
    return FoldModel(pre, joblib.load(folder / "model.joblib"))


def _evaluation(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """``model.json``'s evaluation object, checked: a card must say which protocol scored its metrics."""
    missing = [key for key in ("protocol", "label") if not evaluation.get(key)]
    if missing:
        raise ValueError(f"evaluation needs {missing} to name the protocol that scored the metrics, "
                         f"but got {dict(evaluation)=}")
    return dict(evaluation)


def load_model(path: Path | str) -> Model:
    """Load a model folder written by :func:`save_model`."""
    path = Path(path)
    card_path = path / "model.json"
    if not card_path.is_file():
        raise InputError(f"{path}: not a model folder (no model.json); give a folder under models/ or leader/")
    card = json.loads(card_path.read_text())
    schema = Schema(**card["schema"])
    if card.get("kind") == "stacked_ensemble":
        bases = [load_model(path / "bases" / model_id) for model_id in card["base_models"]]
        kind = LevelTwoEnsemble if card["hyperparameters"].get("level") == 2 else StackedEnsemble
        return kind(card["model_id"], card["algo"], schema, bases, joblib.load(path / "metalearner.joblib"),
                    card["hyperparameters"], card["metrics"])
    folds = [_load_fold(path / f"fold_{i}") for i in range(card["n_folds"])]
    full = _load_fold(path / "full") if (path / "full").is_dir() else None
    return BaggedModel(card["model_id"], card["algo"], schema, folds, card["hyperparameters"], card["metrics"], full)


def link_tree(source: Path, target: Path) -> None:
    """Copy a model folder by hard links where the file system allows (files are never changed in place)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy, dirs_exist_ok=True)
