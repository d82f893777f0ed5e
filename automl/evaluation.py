"""The evaluation protocol: k-fold cross-validation on small data, a holdout on large data.

The protocol is chosen once per run (:func:`choose_protocol`) and every leaderboard row
goes through :func:`cross_validate` on its folds, with preprocessing fitted on each
fold's training rows only (no leakage). Rule: k-fold CV while rows × columns ≤
``CV_CELLS_PER_SECOND`` × budget seconds (diabetes at 120 s: 6,100 of 360,000 cells),
else one stratified holdout of 20 % of the rows, at most ``MAX_HOLDOUT_ROWS`` (AutoGluon
bags small data and holds out on large; H2O's ``nfolds`` switch). ``--validation`` and
``--nfolds`` override the rule.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from automl.bagging import BaggedModel, FoldModel, predict_raw, take_rows
from automl.metrics import Metric, get, score_all
from automl.models import Candidate
from automl.preprocess import Schema, make_preprocessor

if TYPE_CHECKING:
    from automl.schedule import Pace

__all__ = ["Evaluated", "Protocol", "choose_protocol", "make_protocol", "make_folds", "holdout_split",
           "cross_validate", "take_rows", "CutShortError"]

#: k-fold CV while rows × columns stay under this many cells per second of budget.
CV_CELLS_PER_SECOND = 3000
DEFAULT_NFOLDS = 5
HOLDOUT_FRACTION = 0.2
#: A holdout this large scores AUC to about ±0.005: more rows only slow every model down.
MAX_HOLDOUT_ROWS = 50_000


class CutShortError(RuntimeError):
    """The deadline came before every fold was trained: the model is not ranked."""


@dataclass(frozen=True)
class Protocol:
    """How every row of one leaderboard is scored: ``folds`` of (train, test) rows; ``scored`` rows get a prediction."""

    name: str
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]
    scored: np.ndarray
    reason: str = ""
    seed: int = 0
    level_one: tuple[tuple[np.ndarray, np.ndarray], ...] = field(default=(), repr=False)

    @property
    def nfolds(self) -> int | None:
        return len(self.folds) if self.name == "cv" else None

    def label(self) -> str:
        if self.name == "cv":
            return f"{len(self.folds)}-fold cross-validation, out-of-fold predictions (seed {self.seed})"
        return f"holdout of {len(self.scored)} rows, models trained on the other rows (seed {self.seed})"

    def describe(self) -> dict[str, object]:
        """For ``run.json``, ``model.json``, the report and the Prefect summary."""
        return {"protocol": self.name, "nfolds": self.nfolds, "rows_scored": int(len(self.scored)),
                "seed": self.seed, "reason": self.reason, "label": self.label()}


def choose_protocol(n_rows: int, n_columns: int, budget_seconds: float, validation: str = "auto",
                    nfolds: int | None = None) -> tuple[str, str]:
    """``("cv" | "holdout", why)`` by the module's rule, unless ``validation``/``nfolds`` decide."""
    if validation != "auto":
        return validation, f"--validation {validation}"
    if nfolds is not None:
        return "cv", f"--nfolds {nfolds}"
    cells, limit = n_rows * max(n_columns, 1), CV_CELLS_PER_SECOND * budget_seconds
    if cells <= limit:
        return "cv", f"{n_rows} rows x {n_columns} columns <= {CV_CELLS_PER_SECOND} cells/s x {budget_seconds:g}s"
    return "holdout", f"{n_rows} rows x {n_columns} columns > {CV_CELLS_PER_SECOND} cells/s x {budget_seconds:g}s"


def make_protocol(y: np.ndarray, task: str, name: str, nfolds: int | None, seed: int, reason: str = "") -> Protocol:
    """The folds of protocol ``name``; ``level_one`` folds (over the scored rows) score stacked ensembles."""
    if name == "cv":
        folds = tuple(make_folds(y, task, nfolds or DEFAULT_NFOLDS, seed))
        return Protocol("cv", folds, np.arange(len(y)), reason, seed, folds)
    fraction = min(HOLDOUT_FRACTION, MAX_HOLDOUT_ROWS / len(y))
    train, test = holdout_split(y, task, fraction, seed)
    level_one = tuple(make_folds(y[test], task, DEFAULT_NFOLDS, seed))
    return Protocol("holdout", ((train, test),), test, reason, seed, level_one)


@dataclass
class Evaluated:
    """A cross-validated model: the exported bag, its out-of-fold predictions and timings."""

    model: BaggedModel
    oof: np.ndarray
    training_time_ms: float
    predict_time_per_row_ms: float


def make_folds(y: np.ndarray, task: str, nfolds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds for classification, plain shuffled folds for regression."""
    splitter = KFold(nfolds, shuffle=True, random_state=seed) if task == "regression" \
        else StratifiedKFold(nfolds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def holdout_split(y: np.ndarray, task: str, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices for search trials and a network's held-out rows (stratified when
    classifying and every class has two rows; ``fraction`` a share, or a count of validation rows)."""
    rows = np.arange(len(y))
    stratify = None if task == "regression" or np.unique(y, return_counts=True)[1].min() < 2 else y
    train, val = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def _sample_rows(rows: np.ndarray, y: np.ndarray, task: str, size: int) -> np.ndarray:
    """``size`` of ``rows``, seeded, stratified when classifying, in row order."""
    stratify = None if task == "regression" else y[rows]
    return np.sort(train_test_split(rows, train_size=size, random_state=0, stratify=stratify)[0])


def cross_validate(candidate: Candidate, x: pd.DataFrame | np.ndarray, y: np.ndarray, schema: Schema,
                   folds: Sequence[tuple[np.ndarray, np.ndarray]], scored: np.ndarray | None = None,
                   deadline: float | None = None, pace: Pace | None = None, metric: Metric | None = None) -> Evaluated:
    """Fit ``candidate`` on each fold's training rows; predict its held-out rows.

    ``scored`` (default: every row) are the rows that get a prediction, in order; the
    metrics are computed on them. A fold with more training rows than ``candidate.max_rows`` trains
    on a sample of that many. A fold that would start after ``deadline`` (a
    ``time.monotonic()`` value) raises :class:`CutShortError`. With a scheduler's ``pace``, its deadline is the
    model's, each fold of a model that takes a deadline gets its share of the time
    (:meth:`automl.schedule.Pace.fold_deadline`), and after each fold the pace may stop the model
    (:class:`automl.schedule.JobCutShort`) when the rest will not fit. A network with a GLM start keeps that start
    in every fold where it scores at least as well out of fold by ``metric`` (:func:`_keep_starts`).
    """
    if pace is not None:
        deadline = pace.deadline if deadline is None else min(deadline, pace.deadline)
    scored = np.arange(len(y)) if scored is None else scored
    n_out = len(schema.classes) if schema.task != "regression" else 0
    oof = np.zeros((len(scored), n_out)) if n_out else np.zeros(len(scored))
    fold_models, train_s, predict_s, starts = [], 0.0, 0.0, None
    params = candidate.params
    now = time.monotonic if pace is None else pace.clock
    for train, test in folds:
        if deadline is not None and now() >= deadline:
            raise CutShortError(f"{candidate.model_id}: the deadline came after {len(fold_models)} of {len(folds)} "
                                "folds")
        start = time.perf_counter()
        if candidate.max_rows is not None and len(train) > candidate.max_rows:
            train = _sample_rows(train, y, schema.task, candidate.max_rows)
            params = {**candidate.params, "max_rows": candidate.max_rows}  # on the board: it saw a sample
        fit_kwargs = candidate.fit_kwargs
        if pace is not None and "deadline" in fit_kwargs:
            fit_kwargs = {**fit_kwargs, "deadline": min(fit_kwargs["deadline"] or np.inf,
                                                        pace.fold_deadline(len(fold_models), len(folds)))}
        pre = make_preprocessor(schema, candidate.features)  # fit_transform: target encoding cross-fits
        est = candidate.make().fit(pre.fit_transform(take_rows(x, train), y[train]), y[train], **fit_kwargs)
        mid, rows, x_test = time.perf_counter(), np.searchsorted(scored, test), pre.transform(take_rows(x, test))
        oof[rows] = predict_raw(est, x_test, schema.task)
        if getattr(est, "start_weights_", None) is not None:  # its GLM start's predictions too (KerasNetwork)
            starts = np.zeros_like(oof) if starts is None else starts
            est.swap_start()
            starts[rows] = predict_raw(est, x_test, schema.task)
            est.swap_start()
        predict_s += time.perf_counter() - mid
        train_s += mid - start
        fold_models.append(FoldModel(pre, est))
        if pace is not None:
            pace.check(len(fold_models), len(folds), pace.clock() - pace.start)
    oof = _keep_starts(fold_models, oof, starts, y[scored], schema.task, metric)
    model = BaggedModel(candidate.model_id, candidate.algo, schema, fold_models, params,
                        score_all(schema.task, y[scored], oof))
    return Evaluated(model, oof, 1000 * train_s, 1000 * predict_s / len(scored))


def _keep_starts(fold_models: list[FoldModel], oof: np.ndarray, starts: np.ndarray | None, y: np.ndarray,
                 task: str, metric: Metric | None) -> np.ndarray:
    """The out-of-fold predictions of networks that start as the GLM (``linear_start``), or of their starts where
    those score at least as well by ``metric`` (else the log loss or MSE their early stopping reads): the start
    is then every fold's model. Each fold chose its epoch on its own few held-out rows, against a start fitted on
    them too; this is the same choice made on all the out-of-fold rows, as ensembles are kept only when they beat
    their best member out of fold. Without it, networks whose folds had each left their start by a hair ranked
    below GLM_1 (mpls_stops' AUC 0.80373 against 0.80383, nass_cds' 0.87557 against 0.87560)."""
    started = [fold.estimator for fold in fold_models if getattr(fold.estimator, "start_weights_", None) is not None]
    if starts is None or len(started) < len(fold_models):
        return oof
    metric = metric or get("mse" if task == "regression" else "logloss", task)
    if metric.sign() * metric.fn(y, starts) >= metric.sign() * metric.fn(y, oof):
        for network in started:
            network.swap_start()
            network.best_epoch_ = 0
        oof = starts
    for network in started:
        network.start_weights_ = None  # not carried in the exported bag
    return oof
