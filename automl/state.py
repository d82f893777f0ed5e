"""The run's state: what the stages share, and :func:`start`, which builds it from a config and data.

A stage is a plain function ``stage(state) -> values`` in the module of its concept
(``automl.reference``, ``automl.search``, ``automl.ensembles``, ``automl.outputs``); it
reads the config, the data, the protocol and the one :class:`Budget` from the state and
appends what it trained. ``AutoML.fit`` and the Prefect flow run the same stages.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl import data as data_mod
from automl import devices
from automl.budget import Budget, measure_slowness
from automl.config import RunConfig
from automl.engines import TrialRecord
from automl.errors import InputError
from automl.evaluation import Evaluated, Protocol, choose_protocol, make_protocol
from automl.events import EventLog
from automl.metrics import DEFAULT_SORT, Metric, get
from automl.preprocess import Schema, encode_target, infer_schema
from automl.sources import Source, describe

__all__ = ["RunState", "start", "expected_workers", "load_leaderboard_frame", "DEFAULT_RUNTIME_SECS",
           "DEFAULT_IMAGE_RUNTIME_SECS", "RUNS_DIR_ENV"]

#: Default budgets: the diabetes run ends well inside 3 minutes on 2 cores, digits inside 4.
DEFAULT_RUNTIME_SECS = 120.0
DEFAULT_IMAGE_RUNTIME_SECS = 200.0
#: Environment variable naming the folder that holds ``<project>/`` output folders (default ``runs``).
RUNS_DIR_ENV = "AUTOML_RUNS_DIR"
#: Below this budget the search runs in the run's own process: a worker process spends ~10 s (more on a busy
#: machine) importing TensorFlow before its first trial, which a shorter run cannot spare.
WORKERS_MIN_BUDGET = 30.0
#: More classes than this is not a classification the leaderboard's metrics can rank.
MAX_CLASSES = 1000


@dataclass
class RunState:
    """One run: its resolved config, the prepared data and protocol, the clock, and what the stages trained."""

    config: RunConfig
    dataset: data_mod.Dataset
    schema: Schema
    x: pd.DataFrame | np.ndarray
    y: np.ndarray
    metric: Metric
    protocol: Protocol
    budget: Budget
    events: EventLog
    #: The user's leaderboard frame (features, encoded target): every row is scored on it instead.
    leaderboard_frame: tuple[pd.DataFrame, np.ndarray] | None = None
    evaluated: list[Evaluated] = field(default_factory=list)
    trials: list[TrialRecord] = field(default_factory=list)
    board: pd.DataFrame | None = None
    leader: Any = None
    placement: Any = None
    #: The search's worker processes when they were started before the search stage (``search.start_workers``).
    workers: Any = None
    #: Search workers started elsewhere by the orchestrator (:class:`automl.engines.RemoteWorkers`), if any.
    remote: Any = None
    #: The folder of the search split and job that local worker processes load (``automl.worker_files``).
    worker_files: Path | None = None
    #: Search splits built once per run for the searches run as scheduler jobs (``search.search_slice``).
    search_cache: dict[str, Any] = field(default_factory=dict)
    #: The scheduler's ledger (``automl.schedule.Ledger.as_dict`` and the run's CPU use), for ``run.json``.
    schedule: dict[str, Any] | None = None

    @property
    def output(self) -> Path:
        return Path(str(self.config.output_dir))

    @property
    def sort_metric(self) -> str:
        return self.metric.name

    @property
    def family(self) -> str:
        """The network family searched: CNNs for images, MLPs for tables."""
        return "cnn" if self.schema.task == "image" else "mlp"

    @property
    def n_classes(self) -> int:
        return max(len(self.schema.classes), 1)

    @property
    def skewed_target(self) -> bool:
        """A regression target ≥ 0 skewed to the right (prices, counts): it gets the scales of
        ``automl.models.SKEWED_PORTFOLIO`` and ``automl.spaces.GBM_TARGET`` (computed on each call: it is cheap)."""
        from automl.models import skewed_positive

        return self.schema.task == "regression" and skewed_positive(self.y)

    @property
    def study_name(self) -> str:
        return f"{self.config.project}-{self.dataset.fingerprint}"

    def dataset_info(self) -> dict[str, Any]:
        ds = self.dataset
        return {"name": ds.card.name, "source": ds.source, "target": ds.target, "fingerprint": ds.fingerprint,
                "rows": int(len(ds.frame))}


def start(config: RunConfig, data: str | pd.DataFrame | data_mod.Dataset | None = None,
          leaderboard_frame: pd.DataFrame | None = None, events: EventLog | None = None) -> RunState:
    """Load and validate the data, resolve the config's defaults, choose the protocol; start the clock.

    ``data`` defaults to ``config.dataset``; a DataFrame given as ``leaderboard_frame``
    replaces the config's file of that name.
    """
    events = events or EventLog(verbose=config.is_verbose)
    ds = _ingest(config, config.dataset if data is None else data)
    budget_s = config.max_runtime_secs or (DEFAULT_IMAGE_RUNTIME_SECS if ds.images is not None
                                           else DEFAULT_RUNTIME_SECS)
    project = config.project or ds.card.name
    # From here the config (run.json, worker files) names a database URL with its password masked.
    config = config.replace(dataset=None if config.dataset is None else config.source.shown,
                            max_runtime_secs=budget_s, project=project, started_at=config.started_at or time.time(),
                            output_dir=config.output_dir or str(Path(os.environ.get(RUNS_DIR_ENV) or "runs") / project))
    budget = Budget.since_wall_time(budget_s, float(config.started_at or time.time()), slowness=measure_slowness())
    shape = (f"{len(ds.images)} images of {ds.images.shape[1:]}" if ds.images is not None
             else f"{ds.frame.shape[0]} rows, {ds.frame.shape[1]} columns")
    events.add("ingest", f"{ds.source}: {shape}, target {ds.target!r}, fingerprint {ds.fingerprint}")
    events.add("ingest", f"machine: fixed work takes {budget.slowness:.2f} times the reference machine's time; the "
                         "estimates of the run's end and of TensorFlow's import follow it")
    if ds.provenance.get("kind") in ("folder", "glob", "sql") or ds.provenance.get("date_column"):
        events.add("ingest", describe(ds.provenance))
    frame = ds.frame[ds.frame[ds.target].notna()].reset_index(drop=True)
    if len(frame) < len(ds.frame):
        events.warn("preprocess", f"dropped {len(ds.frame) - len(frame)} rows with no target value")
    schema = infer_schema(ds)
    try:
        metric = get(config.evaluation.sort_metric or DEFAULT_SORT[schema.task], schema.task)
    except ValueError as exc:
        raise InputError(f"--sort-metric: {exc}") from None
    x = ds.images if ds.images is not None else frame.drop(columns=[ds.target])
    y = encode_target(schema, frame[ds.target])
    protocol = _protocol(config, ds, schema, y, budget_s)
    config = config.replace(**_workers(config, budget_s, ds.images is not None and protocol.name == "holdout"))
    lb_frame = leaderboard_frame if leaderboard_frame is not None else config.evaluation.leaderboard_frame
    holdout = None if lb_frame is None else load_leaderboard_frame(lb_frame, schema)
    if holdout is not None:
        events.add("preprocess", f"leaderboard scored on a leaderboard frame of {len(holdout[1])} rows")
    for col, reason in schema.dropped.items():
        events.add("preprocess", f"column {col!r} not used: {reason}")
    for col in schema.datetime:
        events.add("preprocess", f"column {col!r}: date/time parts used as features (year, month, day, weekday, "
                                 "hour when it varies)")
    for col in schema.filled:
        events.add("preprocess", f"column {col!r}: free text or a code, often blank; whether it is filled is a feature")
    events.add("preprocess", f"task {schema.task}; {len(schema.numeric)} numeric, {len(schema.categorical)} "
                             f"categorical, {len(schema.datetime)} date/time and {len(schema.filled)} filled-or-blank "
                             f"features; sort by {metric.name}; "
                             f"{protocol.label()} ({protocol.reason})")
    return RunState(config, ds, schema, x, y, metric, protocol, budget, events, holdout)


def expected_workers(config: RunConfig) -> int:
    """The local worker processes a network search of ``config`` will start, as far as the options tell before the
    data is read (a table's default budget): the run warms as many up while it starts (``automl.run``)."""
    if not {"MLP", "CNN"} & config.evaluation.algos or config.search.engine != "optuna":
        return 0
    return config.replace(**_workers(config, config.max_runtime_secs or DEFAULT_RUNTIME_SECS)).search.processes


def _workers(config: RunConfig, budget_s: float, every_core: bool = False) -> dict[str, Any]:
    """The default search workers (:func:`automl.devices.default_workers`: one process per usable core but one,
    as many as the memory holds), in the background, so that the run's process trains the scheduler's other
    jobs on the core left (none on one core, or when the budget is too short to pay
    a worker's start-up: the trials then run in the run's process, as scheduler jobs). ``every_core``: one per
    usable core, where the run's process has little to train (images under a holdout: it ranks the trials' own
    models; two processes of one TensorFlow thread train 1.65x the images per second of one of two threads,
    ``bench/trial_speed.py --cnn``)."""
    if config.search.workers is not None or config.search.engine != "optuna":
        return {"workers": config.search.workers}
    if devices.usable_cores() >= 2 and budget_s >= WORKERS_MIN_BUDGET:
        return {"workers": devices.default_workers(spare_core=not every_core), "background": True}
    return {"workers": 1}


def _ingest(config: RunConfig, data: str | pd.DataFrame | data_mod.Dataset | None) -> data_mod.Dataset:
    if isinstance(data, data_mod.Dataset):
        return data
    if isinstance(data, pd.DataFrame):
        return data_mod.from_frame(data, config.project or "frame", config.target, config.task)
    if data is None:
        raise InputError("no data: give a dataset name or path, or a DataFrame")
    return data_mod.load(Source(str(data), config.query, config.newest_days, config.date_column), config.target,
                         config.task)


def _protocol(config: RunConfig, ds: data_mod.Dataset, schema: Schema, y: np.ndarray, budget_s: float) -> Protocol:
    """The run's one evaluation protocol, checked against the rows each fold needs."""
    settings = config.evaluation
    columns = int(np.prod(ds.images.shape[1:])) if ds.images is not None else len(schema.features)
    name, reason = choose_protocol(len(y), columns, budget_s, settings.validation, settings.nfolds)
    nfolds = settings.nfolds or 5
    if schema.task != "regression":
        counts = np.bincount(y)
        if len(schema.classes) > MAX_CLASSES:
            raise InputError(f"{ds.source}: target {ds.target!r} has {len(schema.classes)} classes, more than "
                             f"{MAX_CLASSES}; pass --task regression for a numeric target, or group the classes")
        needed = nfolds if name == "cv" else 2
        if counts.min() < needed:
            raise InputError(f"{ds.source}: class {schema.classes[int(counts.argmin())]!r} of {ds.target!r} has "
                             f"{int(counts.min())} rows, fewer than the {needed} the protocol needs; add rows or "
                             "merge rare classes")
    elif name == "cv" and len(y) < nfolds:
        raise InputError(f"{ds.source}: {len(y)} rows with a target value, fewer than --nfolds {nfolds}; "
                         "lower --nfolds or add rows")
    return make_protocol(y, schema.task, name, nfolds, config.seed, reason)


def load_leaderboard_frame(frame: str | Path | pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, np.ndarray]:
    """Read and check a user's leaderboard frame: the feature columns and the target, known classes."""
    source = "leaderboard frame" if isinstance(frame, pd.DataFrame) else str(frame)
    if schema.task == "image":
        raise InputError(f"{source}: a leaderboard frame is supported for tables only, not for images")
    if not isinstance(frame, pd.DataFrame):
        frame = data_mod.read_table(Path(frame), schema.target)
    missing = [c for c in [*schema.features, schema.target] if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
                         "the leaderboard frame needs the training columns and the target")
    frame = frame[frame[schema.target].notna()].reset_index(drop=True)
    if schema.task != "regression":
        unknown = sorted(set(frame[schema.target]) - set(schema.classes), key=str)
        if unknown:
            raise InputError(f"{source}: target {schema.target!r} has class(es) {unknown} not in the training data")
        if schema.task == "binary" and frame[schema.target].nunique() < 2:
            raise InputError(f"{source}: target {schema.target!r} holds one class only; a binary leaderboard "
                             "frame needs rows of both classes to score AUC")
    if len(frame) < 2:
        raise InputError(f"{source}: fewer than 2 rows with a target value")
    return frame, encode_target(schema, frame[schema.target])
