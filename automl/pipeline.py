"""``AutoML``: the estimator-like face of the library, and the stages the Prefect flow calls.

``fit`` runs the stages in order; ``flows/automl_flow.py`` runs the same stage
methods as Prefect tasks. Every stage reads the one :class:`Budget`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from automl import data as data_mod
from automl import devices
from automl import leaderboard as lb
from automl.budget import Budget
from automl.engines import SearchData, TrialRecord, get_engine
from automl.ensembles import ENSEMBLE_ALGO, stack
from automl.errors import InputError
from automl.evaluation import Evaluated, cross_validate, holdout_split, make_folds, take_rows
from automl.events import EventLog
from automl.io import atomic_dir, atomic_write_text, write_csv
from automl.metrics import DEFAULT_SORT, get, score_all
from automl.models import Candidate, Model, reference_candidates
from automl.preprocess import Schema, encode_target, infer_schema, make_preprocessor
from automl.spaces import FAMILIES, MAX_EPOCHS

__all__ = ["AutoML", "DEFAULT_RUNTIME_SECS", "DEFAULT_IMAGE_RUNTIME_SECS", "ALGOS", "load_leaderboard_frame"]

#: Default budgets: the diabetes run ends well inside 3 minutes on 2 cores, digits inside 4.
DEFAULT_RUNTIME_SECS = 120.0
DEFAULT_IMAGE_RUNTIME_SECS = 200.0
#: How many of the best search configurations get a cross-validated leaderboard row.
TOP_CONFIGS = 3
#: Reference models start only while less than this share of the budget is spent.
REFERENCE_SHARE = 0.4
#: Share of the budget kept after the search for cross-validating its best configurations.
EVALUATE_SHARE = 0.3
#: A refit trains to the best epoch without validation: about this share of a search trial.
REFIT_SHARE = 0.75
#: Seconds kept back for writing the leaderboard, exporting models, explaining the leader and the report.
FINISH_SECONDS = 10.0
#: Seconds of those reserved for drawing the report after the feature importances.
REPORT_SECONDS = 4.0
#: Share of rows held out to score search trials (search bookkeeping, not the leaderboard).
SEARCH_HOLDOUT = 0.2


class AutoML:
    """Search networks and reference models under a time budget; rank them on one protocol.

    >>> aml = AutoML(max_runtime_secs=60).fit("diabetes")      # doctest: +SKIP
    >>> aml.leaderboard.head(); aml.predict(new_rows)          # doctest: +SKIP
    """

    def __init__(self, max_runtime_secs: float | None = None, max_models: int | None = None,
                 seed: int = 1, nfolds: int = 5, sort_metric: str | None = None, engine: str = "optuna",
                 project: str | None = None, output_dir: str | Path | None = None, verbose: bool | None = None,
                 started_at: float | None = None, include_algos: list[str] | None = None,
                 exclude_algos: list[str] | None = None,
                 leaderboard_frame: str | Path | pd.DataFrame | None = None, tuner: str = "hyperband",
                 distribute: str | None = None, workers: int | None = None, storage: str | None = None,
                 tensorboard: str | Path | None = None) -> None:
        if max_runtime_secs is not None and max_runtime_secs <= 0:
            raise InputError(f"--max-runtime-secs must be positive, but got {max_runtime_secs=}")
        if max_models is not None and max_models < 0:
            raise InputError(f"--max-models must be 0 or more, but got {max_models=}")
        if nfolds < 2:
            raise InputError(f"nfolds must be at least 2, but got {nfolds=}")
        get_engine(engine)
        self.algos = _allowed_algos(include_algos, exclude_algos)
        if tuner not in TUNERS:
            raise InputError(f"--tuner must be one of {', '.join(TUNERS)}, but got {tuner=}")
        if distribute not in (None, *devices.DISTRIBUTE):
            raise InputError(f"--distribute must be one of {', '.join(devices.DISTRIBUTE)}, but got {distribute=}")
        self.tuner, self.distribute, self._placement = tuner, distribute, None
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise InputError(f"--workers must be 1 or more, but got {workers=}")
        if engine != "optuna" and (self.workers > 1 and workers is not None or storage):
            raise InputError(f"--workers above 1 and --storage need --engine optuna; {engine} runs its trials "
                             "in one process (drop --workers/--storage or use --engine optuna)")
        if engine != "optuna":
            self.workers = 1
        self.storage = storage
        self.tensorboard = None if tensorboard is None else str(Path(tensorboard).resolve())
        self.leaderboard_frame = leaderboard_frame
        self.max_runtime_secs, self.max_models, self.seed, self.nfolds = max_runtime_secs, max_models, seed, nfolds
        self.sort_metric, self.engine, self.project = sort_metric, engine, project
        self.output_dir = Path(output_dir) if output_dir else None
        self.started_at = started_at
        verbose = os.environ.get("CI", "").lower() != "true" if verbose is None else verbose
        self.events = EventLog(verbose=verbose)
        self.budget: Budget | None = None
        self.trials: list[TrialRecord] = []
        self.evaluated: list[Evaluated] = []
        self._leaderboard: pd.DataFrame | None = None
        self._leader: Model | None = None

    # -- stages ---------------------------------------------------------------------
    def ingest(self, data: str | pd.DataFrame | data_mod.Dataset, target: str | None = None,
               task: str | None = None) -> data_mod.Dataset:
        """Load and validate the data; start the clock if the caller has not."""
        self._source = data if isinstance(data, str) else None  # what worker processes load again
        if self._source is not None and Path(self._source).exists():
            self._source = str(Path(self._source).resolve())
        if isinstance(data, data_mod.Dataset):
            ds = data
        elif isinstance(data, pd.DataFrame):
            ds = data_mod.from_frame(data, self.project or "frame", target, task)
        else:
            ds = data_mod.load(str(data), target, task)
        self.dataset = ds
        if self.max_runtime_secs is None:  # images train slower: their default budget is larger
            self.max_runtime_secs = DEFAULT_IMAGE_RUNTIME_SECS if ds.images is not None else DEFAULT_RUNTIME_SECS
        self.budget = self.budget or Budget.since_wall_time(self.max_runtime_secs, self.started_at or time.time())
        self.project = self.project or ds.card.name
        self.output_dir = self.output_dir or Path("runs") / self.project
        shape = (f"{len(ds.images)} images of {ds.images.shape[1:]}" if ds.images is not None
                 else f"{ds.frame.shape[0]} rows, {ds.frame.shape[1]} columns")
        self.events.add("ingest", f"{ds.source}: {shape}, target {ds.target!r}, fingerprint {ds.fingerprint}")
        return ds

    def prepare(self) -> Schema:
        """Infer the schema, encode the target, and fix the folds and the search split."""
        ds = self.dataset
        frame = ds.frame[ds.frame[ds.target].notna()].reset_index(drop=True)
        if len(frame) < len(ds.frame):
            self.events.warn("preprocess", f"dropped {len(ds.frame) - len(frame)} rows with no target value")
        self.schema = schema = infer_schema(ds)
        self.sort_metric = self.sort_metric or DEFAULT_SORT[schema.task]
        try:
            self.metric = get(self.sort_metric, schema.task)
        except ValueError as exc:
            raise InputError(f"--sort-metric: {exc}") from None
        self.x = ds.images if ds.images is not None else frame.drop(columns=[ds.target])
        self.y = encode_target(schema, frame[ds.target])
        self.family = "cnn" if schema.task == "image" else "mlp"
        if schema.task != "regression":
            smallest = int(np.bincount(self.y).min())
            if smallest < self.nfolds:
                raise InputError(f"{ds.source}: class {schema.classes[int(np.bincount(self.y).argmin())]!r} of "
                                 f"{ds.target!r} has {smallest} rows, fewer than the {self.nfolds} folds; "
                                 "add rows or merge rare classes")
        self.folds = make_folds(self.y, schema.task, self.nfolds, self.seed)
        self.holdout = None
        if self.leaderboard_frame is not None:
            self.holdout = load_leaderboard_frame(self.leaderboard_frame, schema)
            self.events.add("preprocess", f"leaderboard scored on a leaderboard frame of {len(self.holdout[1])} rows")
        for col, reason in schema.dropped.items():
            self.events.add("preprocess", f"column {col!r} not used: {reason}")
        self.events.add("preprocess", f"task {schema.task}; {len(schema.numeric)} numeric and "
                                      f"{len(schema.categorical)} categorical features; sort by {self.sort_metric}")
        return schema

    def fit_reference_models(self) -> list[Evaluated]:
        """Cross-validate GLM, DRF, XRT and GBM on the leaderboard folds."""
        done = []
        for candidate in reference_candidates(self.schema.task, self.seed):
            if candidate.algo not in self.algos:
                continue
            # Reference models are quick, but must leave most of the budget to the search.
            if done and self.budget.elapsed() > REFERENCE_SHARE * self.budget.seconds:
                self.events.warn("reference", f"skipped {candidate.model_id}: its share of the budget is used up")
                continue
            done += self._evaluate(candidate, "reference")
        return done

    def search(self) -> list[TrialRecord]:
        """Search network architectures on a stratified holdout of the training rows."""
        if self.family.upper() not in self.algos:
            return []
        split = self.search_data()
        space, warm_starts = FAMILIES[self.family]
        import keras  # noqa: F401  - pay the ~4 s import here, not inside the first trial's timing

        self.events.add("search", f"{self.engine} search, {self.budget.left():.0f}s left")
        engine = get_engine(self.engine)
        options: dict[str, Any] = {"tuner": self.tuner} if self.engine == "keras-tuner" else \
            {"workers": self.workers, "storage_url": self.storage,
             "spec": self._worker_spec() if self.workers > 1 or self.storage else None}
        with devices.trial_context(0, self.placement()):
            self.trials = engine.search(
            space, split, self.metric, self.budget, max_trials=self.max_models, seed=self.seed,
            storage_dir=self.output_dir / "search", study_name=self._study_name(),
            warm_starts=warm_starts, refit_trials=REFIT_SHARE * self.nfolds, finish_seconds=FINISH_SECONDS,
            keep_share=EVALUATE_SHARE, events=self.events, max_epochs=MAX_EPOCHS, **options)
        return self.trials

    def search_data(self) -> SearchData:
        """The search split: trials train on 80 % of the rows and are scored on a stratified 20 %."""
        train, val = holdout_split(self.y, self.schema.task, SEARCH_HOLDOUT, self.seed)
        pre = make_preprocessor(self.schema).fit(take_rows(self.x, train))
        return SearchData(pre.transform(take_rows(self.x, train)).astype("float32"), self.y[train],
                          pre.transform(take_rows(self.x, val)).astype("float32"), self.y[val],
                          self.schema.task, max(len(self.schema.classes), 1), self.family, self.tensorboard)

    def _worker_spec(self) -> dict[str, Any]:
        """What a worker process needs to rebuild :meth:`search_data` (JSON)."""
        source = self._source
        if source is None:  # a DataFrame or Dataset object: workers read a copy, card and images included
            path = self.output_dir / "search" / "dataset.joblib"
            path.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(self.dataset, path)
            source = str(path.resolve())
        # The user's task override, not the inferred task: the card is part of the fingerprint.
        return {"dataset": source, "target": self.dataset.target, "task": self.dataset.card.task,
                "seed": self.seed, "nfolds": self.nfolds, "sort_metric": self.sort_metric, "project": self.project,
                "max_runtime_secs": self.max_runtime_secs, "started_at": time.time() - self.budget.elapsed(),
                "fingerprint": self.dataset.fingerprint, "tensorboard": self.tensorboard}

    def evaluate_search(self) -> list[Evaluated]:
        """Cross-validate the best configurations, as many as the budget allows (at least one)."""
        from automl.training import KerasNetwork

        complete = [t for t in self.trials if t.state == "COMPLETE" and t.best_epoch > 0]
        complete.sort(key=lambda t: (-self.metric.sign() * t.value, t.number))
        # Hyperband may run one configuration several times (more epochs each): keep its best run.
        unique, seen = [], set()
        for t in complete:
            key = json.dumps(t.params, sort_keys=True)
            if key not in seen:
                seen.add(key)
                unique.append(t)
        done: list[Evaluated] = []
        for trial in unique[:TOP_CONFIGS]:
            cost = self.nfolds * _refit_seconds(trial)
            if done and self.budget.left() < cost + FINISH_SECONDS:
                self.events.add("evaluate", f"no time to cross-validate trial {trial.number}; stopping here")
                break
            algo = self.family.upper()
            candidate = Candidate(
                f"{algo}_{trial.number}", algo,
                lambda t=trial: KerasNetwork(t.params, self.schema.task, epochs=t.best_epoch, seed=self.seed,
                                             n_classes=max(len(self.schema.classes), 1), family=self.family),
                {**trial.params, "epochs": trial.best_epoch},
                # Refits may use the finish reserve but for the report's share: export is quick.
                fit_kwargs={"deadline": self.budget.deadline - REPORT_SECONDS})
            with devices.trial_context(0, self.placement()):
                result = self._evaluate(candidate, "evaluate")
            if any(getattr(f.estimator, "cut_short_", False) for r in result for f in r.model.folds):
                # An undertrained network would rank on the board as if it were this configuration.
                self.evaluated.remove(result[0])
                self.events.warn("evaluate", f"{candidate.model_id} dropped: the budget ran out during its refit")
                break
            done += result
        return done

    def placement(self) -> devices.Placement:
        """Where networks train (decided once, by :mod:`automl.devices`)."""
        if self._placement is None:
            self._placement = devices.plan(devices.detect(), 1, self.distribute)
            devices.configure(self._placement)
            self.events.add("search", f"devices: {self._placement}")
        return self._placement

    def build_ensembles(self) -> list[Evaluated]:
        """``StackedEnsemble_AllModels`` and ``StackedEnsemble_BestOfFamily`` on the base models' OOF rows."""
        if ENSEMBLE_ALGO not in self.algos:
            return []
        bases = [e for e in self.evaluated if e.model.algo != ENSEMBLE_ALGO]
        best_of_family: dict[str, Evaluated] = {}
        for e in sorted(bases, key=lambda e: -self.metric.sign() * e.model.metrics[self.sort_metric]):
            best_of_family.setdefault(e.model.algo, e)
        groups = {"StackedEnsemble_AllModels": bases, "StackedEnsemble_BestOfFamily": list(best_of_family.values())}
        done: list[Evaluated] = []
        for model_id, members in groups.items():
            if len(members) < 2 or (done and len(members) == len(bases)):
                continue  # an ensemble needs two bases; BestOfFamily equal to AllModels adds nothing
            try:
                result = stack(model_id, members, self.y, self.schema, self.folds)
            except Exception as exc:  # a failed metalearner must not sink the run
                self.events.warn("ensemble", f"{model_id} failed: {type(exc).__name__}: {exc}")
                continue
            self.evaluated.append(result)
            done.append(result)
            self.events.add("ensemble", f"{model_id} {self.sort_metric}={result.model.metrics[self.sort_metric]:.4f}"
                                        f" from {len(members)} models")
        return done

    def finish(self) -> pd.DataFrame:
        """Rank every evaluated model, export them, and write the run's files atomically."""
        if not self.evaluated:
            raise InputError(f"{self.dataset.source}: no model could be trained within "
                             f"{self.max_runtime_secs:g}s; raise --max-runtime-secs")
        rows = [{"model_id": e.model.model_id, "algo": e.model.algo, "params": e.model.params,
                 "metrics": e.model.metrics, "training_time_ms": e.training_time_ms,
                 "predict_time_per_row_ms": e.predict_time_per_row_ms} for e in self.evaluated]
        preds = {e.model.model_id: e.oof for e in self.evaluated}
        y_scored = self.y
        if self.holdout is not None:  # H2O's leaderboard_frame: every row scored on the user's rows
            x_lb, y_scored = self.holdout
            preds = {e.model.model_id: e.model.predict_proba(x_lb) for e in self.evaluated}
            for row in rows:
                row["metrics"] = score_all(self.schema.task, y_scored, preds[row["model_id"]])
        board = lb.build(rows, self.schema.task, self.sort_metric)
        board = lb.add_confidence(board, preds, y_scored, self.schema.task, self.sort_metric, self.seed)
        out = self.output_dir
        by_id = {e.model.model_id: e.model for e in self.evaluated}
        from automl.export import link_tree, save_model

        evaluation = (f"{self.nfolds}-fold cross-validation, out-of-fold predictions (seed {self.seed})"
                      if self.holdout is None else "the leaderboard frame given by the user")
        # Bases first, so that ensembles can hard-link them instead of saving them again.
        for model_id in sorted(board["model_id"], key=lambda m: by_id[m].algo == ENSEMBLE_ALGO):
            save_model(by_id[model_id], out / "models" / model_id, evaluation, {"dataset": self._dataset_info()},
                       saved=out / "models")
        for stale in (out / "models").iterdir():
            if stale.is_dir() and not stale.name.startswith(".") and stale.name not in by_id:
                shutil.rmtree(stale)
        self._leader = by_id[board["model_id"].iloc[0]]
        with atomic_dir(out / "leader") as tmp:
            link_tree(out / "models" / self._leader.model_id, tmp)
        write_csv(board, out / "leaderboard.csv")
        trials = self._trials_frame()
        write_csv(trials, out / "trials.csv")
        self._leaderboard = board
        self.events.add("leaderboard", f"leader {self._leader.model_id} {self.sort_metric}="
                                       f"{board[self.sort_metric].iloc[0]:.4f}; {len(board)} models")
        self._explain(board, preds, y_scored, trials)
        self.events.add("report", f"report.html written; run took {self.budget.elapsed():.1f}s "
                                  f"of {self.max_runtime_secs:g}s")
        atomic_write_text(out / "run.json", json.dumps(self.summary(), indent=1, default=str))
        self.events.write(out / "event_log.csv")
        return board

    # -- public API -------------------------------------------------------------------
    def fit(self, data: str | pd.DataFrame | data_mod.Dataset, target: str | None = None,
            task: str | None = None) -> AutoML:
        """Run every stage: ingest, preprocess, reference models, search, evaluation, export."""
        self.ingest(data, target, task)
        self.prepare()
        self.fit_reference_models()
        self.search()
        self.evaluate_search()
        self.build_ensembles()
        self.finish()
        return self

    @property
    def leaderboard(self) -> pd.DataFrame:
        """The ranked models (a copy), best first."""
        if self._leaderboard is None:
            raise RuntimeError("call fit() first")
        return self._leaderboard.copy()

    @property
    def leader(self) -> Model:
        """The best model on the leaderboard."""
        if self._leader is None:
            raise RuntimeError("call fit() first")
        return self._leader

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The leader's predictions: ``predict`` and ``p_<class>`` columns."""
        return self.leader.predict(frame)

    def get_best_model(self, algorithm: str | None = None, criterion: str | None = None) -> Model:
        """The best model of a family by a leaderboard column, with H2O's semantics.

        ``algorithm``: None (any), ``"basemodel"`` (anything but an ensemble), or a family
        (``glm``, ``gbm``, ``drf``, ``xrt``, ``mlp``/``deeplearning``, ``stackedensemble``;
        any case). ``criterion``: a metric of the task, ``training_time_ms`` or
        ``predict_time_per_row_ms`` (lower is better); default the sort metric.
        """
        board = self.leaderboard
        if algorithm is not None:
            family = _ALGO_ALIASES.get(algorithm.lower())
            if family is None and algorithm.lower() != "basemodel":
                raise ValueError(f"unknown algorithm {algorithm!r}; use basemodel or one of {', '.join(ALGOS)}")
            board = board[board["algo"] != ENSEMBLE_ALGO] if family is None else board[board["algo"] == family]
            if board.empty:
                raise ValueError(f"no {algorithm} model on the leaderboard")
        criterion = criterion or self.sort_metric
        if criterion in lb.TIMING_COLUMNS:
            ascending = True
        else:
            try:
                ascending = not get(criterion, self.schema.task).higher_is_better
            except ValueError as exc:
                raise ValueError(f"criterion: {exc}") from None
        best = board.sort_values([criterion, "model_id"], ascending=[ascending, True], kind="mergesort")
        model_id = best["model_id"].iloc[0]
        return next(e.model for e in self.evaluated if e.model.model_id == model_id)

    def summary(self) -> dict[str, Any]:
        """What the run did, for ``run.json`` and the Prefect artifact."""
        states = pd.Series([t.state for t in self.trials], dtype="object").value_counts().to_dict()
        return {"project": self.project, "dataset": self._dataset_info(), "task": self.schema.task,
                "sort_metric": self.sort_metric, "leader": self._leader.model_id if self._leader else None,
                "max_runtime_secs": self.max_runtime_secs, "elapsed_secs": round(self.budget.elapsed(), 2),
                "engine": self.engine, "seed": self.seed, "nfolds": self.nfolds, "trials": states,
                "output_dir": str(self.output_dir)}

    # -- helpers ----------------------------------------------------------------------
    def _explain(self, board: pd.DataFrame, preds: dict[str, np.ndarray], y_scored: np.ndarray,
                 trials: pd.DataFrame) -> None:
        """``feature_importance.csv`` (permutation importance of the leader) and ``report.html``."""
        from automl.explain import permutation_importance
        from automl.report import write_report

        out = self.output_dir
        importance = None
        if self.schema.task != "image":
            importance = permutation_importance(self.leader, self.x, self.y, self.folds, self.metric,
                                                self.schema.task, n_repeats=3, seed=self.seed,
                                                deadline=self.budget.deadline - REPORT_SECONDS)
            write_csv(importance, out / "feature_importance.csv")
        engine = get_engine(self.engine)
        params = None
        if hasattr(engine, "param_importances"):
            params = engine.param_importances(out / "search", self._study_name())
        summary = self.summary()
        write_report(out / "report.html", title=f"AutoML report: {self.project}", task=self.schema.task,
                     classes=self.schema.classes, sort_metric=self.sort_metric, board=board, y=y_scored,
                     oof=preds, trials=trials, param_importances=params, feature_importance=importance,
                     summary={"dataset": summary["dataset"]["source"], "rows": str(summary["dataset"]["rows"]),
                              "task": self.schema.task, "budget": f"{self.max_runtime_secs:g}s",
                              "engine": self.engine, "seed": str(self.seed)},
                     evaluation="out-of-fold" if self.holdout is None else "holdout")

    def _study_name(self) -> str:
        return f"{self.project}-{self.dataset.fingerprint}"

    def _evaluate(self, candidate: Candidate, stage: str) -> list[Evaluated]:
        try:
            result = cross_validate(candidate, self.x, self.y, self.schema, self.folds)
        except Exception as exc:  # one failing model must not sink the run
            self.events.warn(stage, f"{candidate.model_id} failed: {type(exc).__name__}: {exc}")
            return []
        self.evaluated.append(result)
        self.events.add(stage, f"{candidate.model_id} {self.sort_metric}={result.model.metrics[self.sort_metric]:.4f} "
                               f"({result.training_time_ms / 1000:.1f}s), {self.budget.left():.0f}s left")
        return [result]

    def _dataset_info(self) -> dict[str, Any]:
        ds = self.dataset
        return {"name": ds.card.name, "source": ds.source, "target": ds.target, "fingerprint": ds.fingerprint,
                "rows": int(len(ds.frame))}

    def _trials_frame(self) -> pd.DataFrame:
        cols = ["number", "state", "value", "best_epoch", "duration_s", "params", "error"]
        rows = [{**asdict(t), "params": json.dumps(t.params, sort_keys=True)} for t in self.trials]
        frame = pd.DataFrame(rows, columns=cols).rename(columns={"value": f"validation_{self.sort_metric}"})
        return frame


def _refit_seconds(trial: TrialRecord) -> float:
    """Estimated seconds to train ``trial``'s configuration once, to its best epoch, without validation."""
    from automl.training import EPOCH_CHUNK, PATIENCE_CHUNKS

    epochs_run = min(trial.best_epoch + EPOCH_CHUNK * PATIENCE_CHUNKS, MAX_EPOCHS)
    return trial.duration_s * trial.best_epoch / max(epochs_run, 1)


TUNERS = ("hyperband", "bayesian", "random")
ALGOS = ("GLM", "GBM", "DRF", "XRT", "SVM", "MLP", "CNN", ENSEMBLE_ALGO)
_ALGO_ALIASES = {a.lower(): a for a in ALGOS} | {"deeplearning": "MLP"}


def _allowed_algos(include: list[str] | None, exclude: list[str] | None) -> set[str]:
    """The algorithm families to build; names are matched case-insensitively."""
    if include and exclude:
        raise InputError("use --include-algos or --exclude-algos, not both")

    def resolve(names: list[str]) -> set[str]:
        unknown = [n for n in names if n.lower() not in _ALGO_ALIASES]
        if unknown:
            raise InputError(f"unknown algorithm(s) {', '.join(map(repr, unknown))}; use {', '.join(ALGOS)}")
        return {_ALGO_ALIASES[n.lower()] for n in names}

    if include:
        return resolve(include)
    return set(ALGOS) - resolve(exclude or [])


def load_leaderboard_frame(frame: str | Path | pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, np.ndarray]:
    """Read and check a user's leaderboard frame: the feature columns and the target, known classes."""
    source = "leaderboard frame" if isinstance(frame, pd.DataFrame) else str(frame)
    if schema.task == "image":
        raise InputError(f"{source}: a leaderboard frame is supported for tables only, not for images")
    if not isinstance(frame, pd.DataFrame):
        frame = data_mod.read_table(Path(frame))
    missing = [c for c in [*schema.features, schema.target] if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
                         "the leaderboard frame needs the training columns and the target")
    frame = frame[frame[schema.target].notna()].reset_index(drop=True)
    if schema.task != "regression":
        unknown = sorted(set(frame[schema.target]) - set(schema.classes), key=str)
        if unknown:
            raise InputError(f"{source}: target {schema.target!r} has class(es) {unknown} not in the training data")
    if len(frame) < 2:
        raise InputError(f"{source}: fewer than 2 rows with a target value")
    return frame, encode_target(schema, frame[schema.target])
