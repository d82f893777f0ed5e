"""The run's settings: one validated value that the CLI, the flows, the worker and ``run.json`` share.

``RunConfig`` holds the run-wide settings and two parts, :class:`SearchSettings` and
:class:`EvaluationSettings`. Values are frozen and checked once, when built
(``InputError`` naming the value); :meth:`RunConfig.from_options` builds one from the
flat option names the CLI and the Prefect flows use, and :meth:`RunConfig.to_json` /
:meth:`RunConfig.from_json` carry it to worker processes. Adding an option means a field
here, a flag in the CLI and the code that reads it — nothing else.

This module is imported by ``--help``: it must stay free of numpy, pandas and TensorFlow.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from automl.devices import DISTRIBUTE, usable_cores  # cheap: devices loads TensorFlow only when asked
from automl.errors import InputError
from automl.sources import Source, is_database_url

__all__ = ["RunConfig", "SearchSettings", "EvaluationSettings", "ENGINES", "TUNERS", "VALIDATIONS", "ALGOS",
           "DISTRIBUTE", "ENSEMBLE_ALGO", "FAN_OUT_DEPLOYMENT", "resolve_algo", "cards_dir"]

ENGINES = ("optuna", "keras-tuner")
TUNERS = ("hyperband", "bayesian", "random")
#: ``auto`` picks k-fold CV or a holdout from the data size and the budget (``automl.evaluation.choose_protocol``).
VALIDATIONS = ("auto", "cv", "holdout")
ENSEMBLE_ALGO = "StackedEnsemble"
#: The search-worker deployment of ``prefect.yaml`` (flow ``search-worker``, work pool ``automl-search``).
FAN_OUT_DEPLOYMENT = "search-worker/automl-search"
#: The largest ``--seed``: trials are seeded with ``seed + trial number``, which must stay below NumPy's 2**32.
MAX_SEED = 2**31 - 1
ALGOS = ("GLM", "GBM", "DRF", "XRT", "SVM", "MLP", "CNN", ENSEMBLE_ALGO)
_ALGO_ALIASES = {a.lower(): a for a in ALGOS} | {"deeplearning": "MLP"}


def resolve_algo(name: str) -> str | None:
    """The family called ``name`` in any case (``deeplearning`` is ``MLP``), or None."""
    return _ALGO_ALIASES.get(name.lower())


def cards_dir() -> Path:
    """The folder of built-in dataset cards (``<name>.yaml``): inside the wheel, or ``datasets/`` in a checkout."""
    installed = Path(__file__).parent / "_datasets"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "datasets"


@dataclass(frozen=True)
class SearchSettings:
    """How configurations are searched: engine, parallelism, limits."""

    engine: str = "optuna"
    tuner: str = "hyperband"
    #: Trial worker processes on one study; None: one per core (optuna), 1 (keras-tuner); 0 (with ``fan_out``):
    #: trials run only in the remote workers.
    workers: int | None = None
    storage: str | None = None
    max_models: int | None = None
    #: H2O's ``max_runtime_secs_per_model``: no single model (trial, refit, reference model) trains longer.
    max_runtime_secs_per_model: float | None = None
    tensorboard: str | None = None
    distribute: str | None = None
    #: Search-worker flow runs submitted to a Prefect work pool (``flows/search_worker.py``), beside ``workers``.
    fan_out: int = 0
    #: The deployment those flow runs are made from (``<flow name>/<deployment name>``).
    fan_out_deployment: str = FAN_OUT_DEPLOYMENT
    #: MLP trials trained at once as one population (optuna engine); None ("auto", the default): chosen each round
    #: from the width, batch size, rows and time left (1: one at a time). At 60 s the population search finds
    #: networks at least as good as one at a time, faster (bench/engines.py, bench/README.md).
    population: int | None = None
    #: Trials run in worker processes even with one worker, while the run's process trains the scheduler's other
    #: jobs on its own core (the default on a machine of 2 cores or more, see ``automl.state``); not an option.
    background: bool = False

    def __post_init__(self) -> None:
        _one_of("--engine", self.engine, ENGINES)
        _one_of("--tuner", self.tuner, TUNERS)
        if self.distribute is not None:
            _one_of("--distribute", self.distribute, DISTRIBUTE)
        if self.workers is not None and self.workers < (0 if self.fan_out else 1):
            raise InputError(f"--workers must be 1 or more (0 with --fan-out: no trials on this machine), but got "
                             f"workers={self.workers}")
        if self.max_models is not None and self.max_models < 0:
            raise InputError(f"--max-models must be 0 or more, but got max_models={self.max_models}")
        _positive("--max-runtime-secs-per-model", self.max_runtime_secs_per_model)
        if self.engine != "optuna" and ((self.workers or 1) > 1 or self.storage):
            raise InputError(f"--workers above 1 and --storage need --engine optuna; {self.engine} runs its trials "
                             "in one process (drop --workers/--storage or use --engine optuna)")
        if self.population is not None and self.population < 1:
            raise InputError(f"--population must be 1 or more, but got population={self.population}")
        if self.engine != "optuna" and (self.population or 1) > 1:
            raise InputError(f"--population above 1 needs --engine optuna; {self.engine} trains one trial at a time "
                             "(drop --population or use --engine optuna)")
        if self.fan_out < 0:
            raise InputError(f"--fan-out must be 0 or more, but got fan_out={self.fan_out}")
        if self.fan_out and "://" not in (self.storage or ""):
            raise InputError(f"--fan-out {self.fan_out} needs --storage with a database URL that the pool's workers "
                             f"reach (postgresql://user@host/db), but got storage={self.storage!r}")
        if self.tensorboard is not None:
            object.__setattr__(self, "tensorboard", os.path.abspath(self.tensorboard))

    @property
    def n_workers(self) -> int:
        """Worker processes to run: the setting, else one per usable core for Optuna (the run chooses fewer by
        default, see :func:`automl.devices.default_workers`)."""
        if self.engine != "optuna":
            return 1
        return self.workers if self.workers is not None else usable_cores()

    @property
    def reproducible(self) -> bool:
        """``--max-models N --workers 1``: the run follows trial counts, not the clock, wherever it can (each search
        runs to its count before its best configuration is ranked; no network is capped by its learned cost)."""
        return self.max_models is not None and self.workers == 1 and not self.background

    @property
    def processes(self) -> int:
        """Local worker processes the search starts: ``n_workers`` when above 1, one in the background, else none
        (the trials run in the run's process, or only in remote workers with ``--workers 0``)."""
        return self.n_workers if self.n_workers > 1 else int(self.background and self.n_workers == 1)


@dataclass(frozen=True)
class EvaluationSettings:
    """How every leaderboard row is scored and ranked."""

    validation: str = "auto"
    #: Folds for ``cv`` (default 5).
    nfolds: int | None = None
    sort_metric: str | None = None
    #: A CSV/Parquet file that scores every row instead of CV (H2O's ``leaderboard_frame``).
    leaderboard_frame: str | None = None
    include_algos: tuple[str, ...] | None = None
    exclude_algos: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _one_of("--validation", self.validation, VALIDATIONS)
        if self.nfolds is not None and self.nfolds < 2:
            raise InputError(f"--nfolds must be at least 2, but got nfolds={self.nfolds}")
        if self.nfolds is not None and self.validation == "holdout":
            raise InputError(f"--nfolds {self.nfolds} needs cross-validation; drop it or --validation holdout")
        if self.include_algos and self.exclude_algos:
            raise InputError("use --include-algos or --exclude-algos, not both")
        for option in ("include_algos", "exclude_algos"):
            names = getattr(self, option)
            if names is None:
                continue
            unknown = [n for n in names if resolve_algo(n) is None]
            if unknown:
                raise InputError(f"--{option.replace('_', '-')}: unknown algorithm(s) "
                                 f"{', '.join(map(repr, unknown))}; use {', '.join(ALGOS)}")
            object.__setattr__(self, option, tuple(str(resolve_algo(n)) for n in names))

    @property
    def algos(self) -> frozenset[str]:
        """The families to build."""
        if self.include_algos:
            return frozenset(self.include_algos)
        return frozenset(ALGOS) - frozenset(self.exclude_algos or ())


@dataclass(frozen=True)
class RunConfig:
    """Everything a run is told: the data, the budget, the seed, where outputs go, and its two parts."""

    #: A built-in dataset name, a file/folder path, a glob pattern or a database URL; None for data handed over in
    #: memory.
    dataset: str | None = None
    target: str | None = None
    task: str | None = None
    #: The SELECT whose rows are the table, with a database URL as ``dataset`` (see :class:`automl.sources.Source`).
    query: str | None = None
    #: Only the newest N days: rows within N days of ``date_column``'s newest date, else files modified in the last N.
    newest_days: float | None = None
    date_column: str | None = None
    #: Wall-time budget counted from ``started_at``; None: the task's default (``automl.budget``).
    max_runtime_secs: float | None = None
    seed: int = 1
    project: str | None = None
    output_dir: str | None = None
    #: Progress lines on stderr; None: on unless ``CI=true``.
    verbose: bool | None = None
    #: ``time.time()`` when the run started (the CLI passes its process start).
    started_at: float | None = None
    search: SearchSettings = field(default_factory=SearchSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)

    def __post_init__(self) -> None:
        _positive("--max-runtime-secs", self.max_runtime_secs)
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed must be between 0 and {MAX_SEED}, but got seed={self.seed}")
        if self.task is not None:
            _one_of("--task", self.task, ("binary", "multiclass", "regression", "image"))
        if self.dataset is not None and not is_database_url(self.dataset) and (
                os.path.exists(self.dataset) or glob.has_magic(self.dataset)):
            object.__setattr__(self, "dataset", os.path.abspath(self.dataset))  # workers may run elsewhere
        if self.dataset is not None:  # the source options are checked against the dataset (data in memory has none)
            object.__setattr__(self, "query", self.source.query)  # as normalized
        if self.output_dir is not None:
            object.__setattr__(self, "output_dir", os.path.abspath(self.output_dir))

    @property
    def source(self) -> Source:
        """What ``dataset`` and the source options say to read (checked when built)."""
        if self.dataset is None:
            raise InputError("no dataset: give a dataset name, path, glob pattern or database URL")
        return Source(self.dataset, self.query, self.newest_days, self.date_column)

    @property
    def is_verbose(self) -> bool:
        return os.environ.get("CI", "").lower() != "true" if self.verbose is None else self.verbose

    @classmethod
    def from_options(cls, **options: Any) -> RunConfig:
        """Build from flat option names (``max_models=3, nfolds=5, …``), as the CLI and flows give them."""
        parts: dict[str, dict[str, Any]] = {"search": {}, "evaluation": {}, "run": {}}
        owners = {f.name: "search" for f in fields(SearchSettings)} | \
                 {f.name: "evaluation" for f in fields(EvaluationSettings)} | \
                 {f.name: "run" for f in fields(cls) if f.name not in ("search", "evaluation")}
        for name, value in options.items():
            if name not in owners:
                raise InputError(f"unknown option {name!r}; known: {', '.join(sorted(owners))}")
            if value is not None and name in ("include_algos", "exclude_algos"):
                value = tuple(value)
            parts[owners[name]][name] = value
        return cls(**parts["run"], search=SearchSettings(**parts["search"]),
                   evaluation=EvaluationSettings(**parts["evaluation"]))

    def options(self) -> dict[str, Any]:
        """The flat option names and values (the inverse of :meth:`from_options`)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("search", "evaluation")}
        return flat | dataclasses.asdict(self.search) | dataclasses.asdict(self.evaluation)

    def replace(self, **options: Any) -> RunConfig:
        """A copy with some flat options changed (validated again)."""
        return RunConfig.from_options(**(self.options() | options))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        return cls.from_options(**{k: v for k, v in raw.items() if k not in ("search", "evaluation")},
                                **raw.get("search", {}), **raw.get("evaluation", {}))


def _one_of(option: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{option} must be one of {', '.join(allowed)}, but got {value!r}")


def _positive(option: str, value: float | None) -> None:
    """Seconds: positive and finite (``inf`` or ``nan`` would make every deadline after it meaningless)."""
    if value is not None and not 0 < value < math.inf:
        raise InputError(f"{option} must be positive and finite (leave it out for the default), but got {value!r}")
