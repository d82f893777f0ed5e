"""Quality suite: our CLI, H2O AutoML, FLAML and AutoGluon at the same budget on fixed splits of twelve public tables.

Datasets (``--datasets``, default all): ``diabetes`` (``Outcome``, binary), ``titanic`` (``Survived``,
binary), ``churn`` (``churn``, binary), ``penguins`` (``species``, multiclass), ``diamonds`` (``price``,
regression), all from ``../shared/datasets/``, and ``diabetes-progression`` (scikit-learn's
``load_diabetes(scaled=False)``, ``target``, regression); then six more tables of ``../shared/datasets/``, each
named by its file (its README says where they come from and which leaking columns were dropped):
``loans_full_schema`` (``interest_rate``, regression; 10,000 rows, free-text ``emp_title``), ``nass_cds``
(``dead``, binary, 4.5 % dead; 26,217 rows), ``mpls_stops`` (``personSearch``, binary, 12 % YES; 43,699 rows,
read from Parquet, its ``date`` written as ``2017-01-01 06:00:42+00:00``), ``movies`` (``rating``, regression, a
weak signal; 58,788 rows, free-text ``title``), ``help_baseline`` (``LINKSTATUS``, binary; 447 rows × 628
columns, p > n) and ``caravan`` (``Purchase``, binary, 6 % Yes; 5,822 rows). Each table is split once, 80/20 with
``random_state=0`` (stratified by the target for classification), and cached as ``train.csv``/``test.csv``
under ``--out``/``data/<dataset>/``. The shared files are copied cell by cell as text (a Parquet file as the text
pandas writes to CSV, a missing value blank), so the split files hold the public values unchanged; every column
stays in (each tool decides what an identifier is).

Tools (``--tools``, default all), each in a child process of its own at ``--max-runtime-secs`` (120):

Where the tools' default ranking metric is not the metric measured here, every tool ranks by the measured
one (``SORT_METRIC``): multiclass by log loss (H2O's default, and ours, is the mean per-class error, which on
penguins' 275 training rows ties or nearly ties every good model and leaves the leader's log loss to chance;
FLAML's default is log loss already).

- ``ours``: ``python -m automl.run train.csv --target T --task K --max-runtime-secs B --output DIR --seed S``
  (``--sort-metric logloss`` for multiclass), then ``python -m automl.predict DIR/leader test.csv`` in a
  fresh process. ``models``: rows of ``leaderboard.csv``.
- ``h2o``: ``H2OAutoML(max_runtime_secs=B, seed=S)`` (``sort_metric="logloss"`` for multiclass) on a fresh
  local cluster (all cores, 6 GB heap, a free port; the target an enum for classification), its leader's
  ``predict`` on the test frame. ``models``: leaderboard rows.
- ``flaml``: ``flaml.AutoML().fit(X, y, task=K, time_budget=B, seed=S, n_jobs=cores)``, text columns as
  pandas categories. ``models``: trials, i.e. models fitted (``config_history`` keeps only the improving
  ones); ``learners``: the estimators that had a trial.
- ``autogluon``: ``TabularPredictor(label=T, problem_type=K, eval_metric="roc_auc"|"log_loss"|
  "root_mean_squared_error", path=DIR/autogluon).fit(train, time_limit=B, presets="best_quality")``, then its
  ``predict_proba``/``predict`` on the test rows (AutoGluon takes no seed). ``models``: ``model_names()``, the
  bagged models and weighted ensembles it kept; ``leader``: ``model_best``. It runs in an interpreter of its own
  (``--autogluon-python``, else ``$AUTOGLUON_PYTHON``, else this one): AutoGluon 1.6 requires pandas < 2.4 and must
  never be a dependency of ``automl``, so it lives in a separate virtualenv::

      python3 -m venv /work/agvenv && /work/agvenv/bin/pip install "autogluon.tabular[all]==1.6.3"  # ~2.7 GB
      AUTOGLUON_PYTHON=/work/agvenv/bin/python python bench/suite.py --tools autogluon

Every tool's test predictions go through one ``preds.csv`` form (``predict`` and ``p_<class>``) and are
scored here with scikit-learn: binary ``auc`` (of the larger label), multiclass ``logloss`` and ``accuracy``
(arg-max of the probabilities), regression ``rmse`` and ``r2``. Our rows add ``vs_h2o``, ``vs_flaml`` and
``vs_autogluon``: per metric, ``{diff, low, high}``, the difference on the test rows and its 95 % paired-bootstrap
percentile interval (1,000 resamples of the test rows, the same rows for both tools; a resample where a metric is
undefined, AUC on one class, is skipped), signed so that positive means ours is better.

Output: one JSON line per tool and dataset on stdout (progress on stderr): ``bench``, ``dataset``, ``tool``,
``task``, ``budget_s``, ``wall_s`` (launch of the tool's process until its model is trained: our CLI's whole
run; for the rivals until ``train``/``fit`` returns, cluster start included), ``models``, the metrics,
then ``leader``, ``total_s`` (every process of the tool, test predictions included), ``peak_rss_mb`` (of the
process tree), the split's sizes and ``exit_code``. A failed run still prints its line, with ``error``.
Our rows also carry ``wall_over_budget`` (``wall_s`` / budget), ``cpu_percent_measured`` (the CPU seconds of the
CLI's process tree, sampled from ``/proc``, over its wall, in % of one core: Prefect's temporary server and the
trial workers count; our runs share one Prefect home under ``--out``, as a user's runs do, so that only the
first pays for its database's creation), ``board_rows`` (rows of ``leaderboard.csv``) and, where the run's
``run.json`` has the scheduler's accounting under ``"schedule"``, its ``families`` (per family ``jobs``, ``skipped``,
``core_seconds``, ``wasted_core_seconds``), ``core_seconds``, ``wasted_core_seconds`` and ``cpu_percent``.

    python bench/suite.py [--datasets diabetes,titanic] [--tools ours,h2o,flaml,autogluon] [--max-runtime-secs 120]
                          [--out DIR] [--seed 1] [--saved-rivals] [--compare] [--autogluon-python PYTHON]

``--compare`` trains nothing: it prints, per dataset, every tool's test metrics and ours against each rival from
the predictions earlier runs left in ``--out`` (tools run apart, one after the other on a quiet machine, are
compared on the same rows). ``--saved-rivals`` compares ours with the predictions an earlier run of a rival left
in ``--out`` (for a rival not in ``--tools``): a change of ours is then measured against the same rival
predictions, in half the time (H2O moves little from run to run at a seed: diabetes repeats to four digits,
titanic's AUC spans 0.8473–0.8515 over six runs, penguins' log loss was 0.0146 with its GLM leading and once
0.0201 with a deep-learning leader).

H2O and FLAML come from the ``bench`` extra (``pip install -e ".[bench]"``); H2O needs Java. AutoGluon comes from
its own virtualenv (above).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import ROOT, Finished, child_env, free_port, log, run_sampled
from scale_rows import emit, timeout_for
from sklearn.metrics import accuracy_score, log_loss, r2_score, roc_auc_score, root_mean_squared_error

SHARED = ROOT.parent / "shared" / "datasets"
TOOLS = ("ours", "h2o", "flaml", "autogluon")
RIVALS = ("h2o", "flaml", "autogluon")
#: The module each rival imports, looked for in the interpreter that runs it.
RIVAL_MODULES = {"h2o": "h2o", "flaml": "flaml", "autogluon": "autogluon.tabular"}
#: Where the suite looks for an interpreter with AutoGluon when ``--autogluon-python`` is not given.
AUTOGLUON_PYTHON = "AUTOGLUON_PYTHON"
SPLIT_SEED = 0
BOOTSTRAP_SEED = 0
RESAMPLES = 1000
#: The ranking metric given to ours and H2O where their default is not the metric measured (see above).
SORT_METRIC = {"multiclass": "logloss"}
#: Resamples drawn at once: a (CHUNK, test rows) index array bounds the bootstrap's memory.
CHUNK = 50


@dataclass(frozen=True)
class Dataset:
    """A table to benchmark on: its name, what to predict, the task, and how to read it whole."""

    name: str
    target: str
    task: str
    read: Callable[[], pd.DataFrame]

    @property
    def classifies(self) -> bool:
        return self.task != "regression"


def shared_table(file: str) -> Callable[[], pd.DataFrame]:
    # Every cell as its text, a blank as a blank: written back, the split files hold the file's values unchanged.
    return lambda: pd.read_csv(SHARED / file, dtype=str, keep_default_na=False)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ``frame`` as the text pandas writes to CSV, a missing value as a blank.

    Read back as CSV the text gives the same values: floats are written to round-trip, timestamps in ISO 8601
    with their offset (``2017-01-01 06:00:42+00:00``).
    """
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)


def shared_parquet(file: str) -> Callable[[], pd.DataFrame]:
    # A typed file read as the CSVs are, so that its split files are CSV text like the others'.
    return lambda: as_text(pd.read_parquet(SHARED / file))


def diabetes_progression() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame  # as the dataset card loads it


DATASETS = {d.name: d for d in (
    Dataset("diabetes", "Outcome", "binary", shared_table("diabetes.csv")),
    Dataset("titanic", "Survived", "binary", shared_table("titanic.csv")),
    Dataset("churn", "churn", "binary", shared_table("churn.csv")),
    Dataset("penguins", "species", "multiclass", shared_table("penguins.csv")),
    Dataset("diamonds", "price", "regression", shared_table("diamonds.csv")),
    Dataset("diabetes-progression", "target", "regression", diabetes_progression),
    Dataset("loans_full_schema", "interest_rate", "regression", shared_table("loans_full_schema.csv")),
    Dataset("nass_cds", "dead", "binary", shared_table("nass_cds.csv")),
    Dataset("mpls_stops", "personSearch", "binary", shared_parquet("mpls_stops.parquet")),
    Dataset("movies", "rating", "regression", shared_table("movies.csv")),
    Dataset("help_baseline", "LINKSTATUS", "binary", shared_table("help_baseline.csv")),
    Dataset("caravan", "Purchase", "binary", shared_table("caravan.csv")),
)}


def split(frame: pd.DataFrame, target: str, stratify: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fixed 80/20 split of ``frame``, stratified by ``target`` if ``stratify``."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=0.2, stratify=frame[target] if stratify else None,
                                   random_state=SPLIT_SEED)
    return train, test


def cached_split(folder: Path, dataset: Dataset) -> tuple[Path, Path]:
    """``folder/train.csv`` and ``folder/test.csv``, made once (``scale_rows.cached_split``, stratified or not)."""
    train, test = folder / "train.csv", folder / "test.csv"
    if train.exists() and test.exists():
        return train, test
    log(f"writing {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    for half, path in zip(split(dataset.read(), dataset.target, dataset.classifies), (train, test), strict=True):
        partial = path.with_name(f".{path.name}.partial")  # a killed run leaves no half-written cache
        half.to_csv(partial, index=False)
        os.replace(partial, path)
    return train, test


def read_target(path: Path, dataset: Dataset) -> pd.Series:
    """The target column of a split file: class labels as the file's text, or regression values."""
    if dataset.classifies:
        return pd.read_csv(path, usecols=[dataset.target], dtype=str, keep_default_na=False)[dataset.target]
    return pd.read_csv(path, usecols=[dataset.target])[dataset.target].astype(float)


def encode(labels: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """Each label's position in ``classes``."""
    position = {c: i for i, c in enumerate(classes)}
    if unknown := sorted(set(labels) - position.keys()):
        raise ValueError(f"labels {unknown} are not among the training classes {list(classes)}")
    return labels.map(position).to_numpy(dtype=np.int64)


def probabilities(preds: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The ``p_<class>`` columns of ``preds`` in the order of ``classes``, each row scaled to sum to 1."""
    columns = [f"p_{c}" for c in classes]
    if missing := [c for c in columns if c not in preds.columns]:
        raise ValueError(f"predictions lack {missing}; they have {list(preds.columns)}")
    proba = preds[columns].to_numpy(dtype=np.float64)
    # Probabilities written to CSV are rounded (and H2O's need not add up exactly): log_loss wants sums of 1.
    return proba / proba.sum(axis=1, keepdims=True)


def read_predictions(path: Path, dataset: Dataset, classes: Sequence[str]) -> np.ndarray:
    """A ``preds.csv``: the class-probability matrix (columns in ``classes`` order) or the predicted values."""
    preds = pd.read_csv(path)
    return probabilities(preds, classes) if dataset.classifies else preds["predict"].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class Metric:
    """A test metric: ``fn(y, pred)`` with class positions and probabilities, or values; its direction."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    # NaN where undefined (a resample of one class), which the bootstrap skips.
    return float(roc_auc_score(y, proba[:, 1])) if 0 < y.sum() < len(y) else float("nan")


METRICS: dict[str, tuple[Metric, ...]] = {
    "binary": (Metric("auc", _auc, True),),
    "multiclass": (
        Metric("logloss", lambda y, p: float(log_loss(y, p, labels=np.arange(p.shape[1]))), False),
        Metric("accuracy", lambda y, p: float(accuracy_score(y, p.argmax(axis=1))), True),
    ),
    "regression": (
        Metric("rmse", lambda y, p: float(root_mean_squared_error(y, p)), False),
        Metric("r2", lambda y, p: float(r2_score(y, p)), True),
    ),
}


def scores(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every test metric of ``task``."""
    return {m.name: round(m.fn(y, pred), 4) for m in METRICS[task]}


def paired_interval(metric: Metric, y: np.ndarray, ours: np.ndarray, other: np.ndarray, *,
                    resamples: int = RESAMPLES, chunk: int = CHUNK, seed: int = BOOTSTRAP_SEED,
                    level: float = 0.95) -> dict[str, float]:
    """How much better ``ours`` scores than ``other`` (positive: ours better), and its percentile interval.

    Each resample draws ``len(y)`` row indices with replacement and scores both on those rows. The indices
    are drawn ``chunk`` resamples at a time, so memory is O(chunk × n) for any number of resamples; the
    generator's stream does not depend on the chunk size, so neither do the resamples.
    """
    def gap(rows: np.ndarray) -> float:
        a, b = metric.fn(y[rows], ours[rows]), metric.fn(y[rows], other[rows])
        return a - b if metric.higher_is_better else b - a

    rng = np.random.default_rng(seed)
    n = len(y)
    gaps = np.empty(resamples)
    for start in range(0, resamples, chunk):
        block = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        gaps[start:start + len(block)] = [gap(rows) for rows in block]
    tail = 50 * (1 - level)
    low, high = np.nanpercentile(gaps, [tail, 100 - tail])
    return {"diff": round(gap(np.arange(n)), 4), "low": round(float(low), 4), "high": round(float(high), 4)}


# ---- the rivals, each run in a child process: ``suite.py child TOOL TRAIN TEST PREDS ...``


def h2o_columns(names: Sequence[str], levels: Sequence[str]) -> list[str]:
    """H2O's prediction columns renamed ``predict``, ``p_<class>``.

    Its probability columns follow the target's levels in order, each named by its level, or ``p<level>``
    for a level that is a number; any other layout is an error rather than a guess.
    """
    if (list(names[:1]) != ["predict"] or len(names) != len(levels) + 1
            or any(name not in (level, f"p{level}") for name, level in zip(names[1:], levels, strict=True))):
        raise ValueError(f"H2O's prediction columns {list(names)} do not follow the target's levels {list(levels)}")
    return ["predict", *(f"p_{level}" for level in levels)]


def h2o_automl(train: Path, test: Path, target: str, task: str, budget_s: float,
               seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """H2O AutoML on ``train``; its leader's predictions of ``test``."""
    import h2o
    from h2o.automl import H2OAutoML

    h2o.init(nthreads=os.cpu_count() or 1, max_mem_size="6G", port=free_port(), verbose=False)
    try:
        h2o.no_progress()
        # A 0/1 target would parse as numbers: make it a class label from the start.
        train_frame = h2o.import_file(str(train), col_types={target: "enum"} if task != "regression" else None)
        # The test file with the training file's column types, so no column changes kind between the two.
        test_frame = h2o.import_file(str(test), col_types=train_frame.types)
        sort = {"sort_metric": SORT_METRIC[task]} if task in SORT_METRIC else {}
        aml = H2OAutoML(max_runtime_secs=max(1, round(budget_s)), seed=seed, **sort)  # whole seconds only
        aml.train(x=[c for c in train_frame.columns if c != target], y=target, training_frame=train_frame)
        trained_at = time.time()
        preds = aml.leader.predict(test_frame).as_data_frame()
        if task != "regression":
            preds.columns = h2o_columns(list(preds.columns), train_frame[target].levels()[0])
        return preds, {"leader": aml.leader.model_id, "models": int(aml.leaderboard.nrows),
                       "trained_at": trained_at, "version": h2o.__version__}
    finally:
        h2o.cluster().shutdown()


def read_frames(train: Path, test: Path, target: str, task: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Both split files as pandas reads them (class labels as text) and the training file's text columns.

    The test file reads those columns as text too, so that no column changes kind between the two.
    """
    labels = {target: str} if task != "regression" else {}
    train_frame = pd.read_csv(train, dtype=labels)
    text = [c for c in train_frame.columns if c != target and not pd.api.types.is_numeric_dtype(train_frame[c])]
    return train_frame, pd.read_csv(test, dtype={**labels, **dict.fromkeys(text, str)}), text


def flaml_automl(train: Path, test: Path, target: str, task: str, budget_s: float,
                 seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """FLAML on ``train``; its best model's predictions of ``test``."""
    import flaml

    train_frame, test_frame, text = read_frames(train, test, target, task)
    x_train, x_test = train_frame.drop(columns=target), test_frame.drop(columns=target)
    for col in text:
        x_train[col] = x_train[col].astype("category")
        x_test[col] = pd.Categorical(x_test[col], categories=x_train[col].cat.categories)
    automl = flaml.AutoML()
    automl.fit(x_train, train_frame[target], task=task, time_budget=budget_s, seed=seed,
               n_jobs=os.cpu_count() or 1, verbose=0)
    trained_at = time.time()
    preds = pd.DataFrame({"predict": automl.predict(x_test)})
    if task != "regression":
        proba = pd.DataFrame(automl.predict_proba(x_test), columns=[f"p_{c}" for c in automl.classes_])
        preds = pd.concat([preds, proba], axis=1)
    # Trials per learner: every trial fits one model (config_history records only those that improved).
    trials: dict[str, int] = automl._iter_per_learner
    return preds, {"leader": automl.best_estimator, "models": int(sum(trials.values())),
                   "learners": sorted(name for name, count in trials.items() if count),
                   "trained_at": trained_at, "version": flaml.__version__}


#: AutoGluon's names for the metric measured here (``eval_metric``: what it ranks and ensembles by).
AUTOGLUON_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}


def autogluon_automl(train: Path, test: Path, target: str, task: str, budget_s: float,
                     seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """AutoGluon's ``best_quality`` preset on ``train`` (models saved under ``autogluon/`` in the working folder);
    its best model's predictions of ``test``. AutoGluon takes no seed: its models use their own fixed ones."""
    from importlib.metadata import version

    from autogluon.tabular import TabularPredictor

    train_frame, test_frame, _ = read_frames(train, test, target, task)
    # The task given, not inferred: a rating with a few dozen values would otherwise be read as classes.
    predictor = TabularPredictor(label=target, problem_type=task, eval_metric=AUTOGLUON_METRIC[task],
                                 path=str(Path("autogluon").resolve()))
    predictor.fit(train_frame, time_limit=budget_s, presets="best_quality")
    trained_at = time.time()
    x_test = test_frame.drop(columns=target)
    preds = pd.DataFrame({"predict": predictor.predict(x_test).to_numpy()})
    if task != "regression":
        proba = predictor.predict_proba(x_test)  # a column per class label
        preds = pd.concat([preds, pd.DataFrame(proba.to_numpy(), columns=[f"p_{c}" for c in proba.columns])], axis=1)
    return preds, {"leader": predictor.model_best, "models": len(predictor.model_names()),
                   "trained_at": trained_at, "version": version("autogluon.tabular")}


RUNNERS = {"h2o": h2o_automl, "flaml": flaml_automl, "autogluon": autogluon_automl}


def child(argv: list[str]) -> int:
    """One rival's run: its test predictions to PREDS, one JSON line of facts on stdout."""
    parser = argparse.ArgumentParser(prog="suite.py child", description=child.__doc__)
    parser.add_argument("tool", choices=sorted(RUNNERS))
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("preds", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", required=True, choices=sorted(METRICS))
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    # Everything the tool writes to stdout goes to stderr, at the descriptor, so that the processes it starts
    # (H2O's cluster, AutoGluon's Ray workers) and its libraries' loggers cannot mix with the facts line.
    facts_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    preds, facts = RUNNERS[args.tool](args.train, args.test, args.target, args.task, args.budget, args.seed)
    preds.to_csv(args.preds, index=False)
    print(json.dumps(facts), file=facts_out, flush=True)
    return 0


# ---- the parent: one split, every tool


@dataclass(frozen=True)
class Split:
    """A dataset's cached split and the facts every tool's row shares."""

    dataset: Dataset
    train: Path
    test: Path
    classes: list[str]
    y: np.ndarray
    train_rows: int


def load_split(dataset: Dataset, data: Path) -> Split:
    train, test = cached_split(data / dataset.name, dataset)
    train_target, truth = read_target(train, dataset), read_target(test, dataset)
    classes = sorted(train_target.unique().tolist()) if dataset.classifies else []
    y = encode(truth, classes) if dataset.classifies else truth.to_numpy()
    return Split(dataset, train, test, classes, y, len(train_target))


def new_row(case: Split, tool: str, budget_s: float) -> dict[str, Any]:
    return {"bench": "suite", "dataset": case.dataset.name, "tool": tool, "task": case.dataset.task,
            "budget_s": budget_s}


def in_print_order(row: dict[str, Any]) -> dict[str, Any]:
    """The row with the fields one compares first: who, where, how long, how many models, how good."""
    lead = ["bench", "dataset", "tool", "task", "budget_s", "wall_s", "models",
            *(m.name for m in METRICS[row["task"]]), *(f"vs_{r}" for r in RIVALS), "leader"]
    return {**{k: row[k] for k in lead if k in row}, **{k: v for k, v in row.items() if k not in lead}}


def finish_row(row: dict[str, Any], case: Split, done: Finished, total_s: float) -> None:
    row.update(total_s=round(total_s, 1), peak_rss_mb=done.peak_rss_mb, train_rows=case.train_rows,
               test_rows=len(case.y), exit_code=done.exit_code)
    if done.exit_code != 0:
        row["error"] = "killed past its time limit" if done.timed_out else done.last_stderr_line


#: What ``run.json["schedule"]`` (the scheduler's accounting of cores) gives our rows, where a run writes it.
SCHEDULE_FIELDS = ("families", "core_seconds", "wasted_core_seconds", "cpu_percent")


def schedule_fields(run_json: Path) -> dict[str, Any]:
    """``SCHEDULE_FIELDS`` from the run's ``run.json`` under ``"schedule"``: those present, none if it has none."""
    try:
        schedule = json.loads(run_json.read_text()).get("schedule")
    except (OSError, ValueError):
        return {}
    return {k: schedule[k] for k in SCHEDULE_FIELDS if k in schedule} if isinstance(schedule, dict) else {}


def run_ours(case: Split, budget_s: float, seed: int, folder: Path, prefect_home: Path) -> dict[str, Any]:
    """The CLI on the training rows, then its leader on the test rows, each in a fresh process. The runs of a suite
    share ``prefect_home``, as a user's runs share theirs: a fresh home's server migrates its database first
    (~7 s of a run's start-up, before any model), once per machine, not once per run."""
    output, env, row = folder / "output", child_env(folder, prefect_home), new_row(case, "ours", budget_s)
    done = run_sampled([sys.executable, "-m", "automl.run", str(case.train), "--target", case.dataset.target,
                        "--task", case.dataset.task, "--max-runtime-secs", f"{budget_s:g}", "--output", str(output),
                        "--seed", str(seed), *(("--sort-metric", SORT_METRIC[case.dataset.task])
                                               if case.dataset.task in SORT_METRIC else ())],
                       folder, env, timeout_for(budget_s))
    # The process tree's CPU time over the run's wall (100 = one core busy throughout).
    row.update(wall_s=done.wall_s, wall_over_budget=round(done.wall_s / budget_s, 3),
               cpu_percent_measured=round(100 * done.cpu_s / done.wall_s, 1) if done.wall_s else None)
    finish_row(row, case, done, done.wall_s)
    if done.exit_code != 0:
        return row
    board = pd.read_csv(output / "leaderboard.csv")
    row.update(models=len(board), board_rows=len(board), leader=str(board["model_id"].iloc[0]),
               **schedule_fields(output / "run.json"))
    scored = run_sampled([sys.executable, "-m", "automl.predict", str(output / "leader"), str(case.test),
                          "--output", str(folder / "preds.csv")], folder / "predict", env, timeout_for(60))
    row["total_s"] = round(done.wall_s + scored.wall_s, 1)
    if scored.exit_code != 0:
        row.update(exit_code=scored.exit_code, error=f"predict: {scored.last_stderr_line}")
    return row


def run_rival(case: Split, tool: str, budget_s: float, seed: int, folder: Path,
              python: str = sys.executable) -> dict[str, Any]:
    """``tool`` in a child process of this script run by ``python``; its facts from the child's last stdout line."""
    row = new_row(case, tool, budget_s)
    launched = time.time()
    done = run_sampled([python, str(Path(__file__).resolve()), "child", tool, str(case.train),
                        str(case.test), str(folder / "preds.csv"), "--target", case.dataset.target,
                        "--task", case.dataset.task, "--budget", f"{budget_s:g}", "--seed", str(seed)],
                       folder, child_env(folder), timeout_for(budget_s))
    row["wall_s"] = done.wall_s
    if done.exit_code == 0:
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(facts.pop("trained_at") - launched, 1)
        row.update(facts)
    finish_row(row, case, done, done.wall_s)
    return row


def saved_predictions(case: Split, tools: Sequence[str], out: Path) -> dict[str, np.ndarray]:
    """The predictions that an earlier run in ``out`` left of each rival not in ``tools``."""
    preds: dict[str, np.ndarray] = {}
    for rival in (r for r in RIVALS if r not in tools):
        if (saved := out / "runs" / case.dataset.name / rival / "preds.csv").exists():
            log(f"{case.dataset.name}: {rival}'s predictions from {saved}")
            preds[rival] = read_predictions(saved, case.dataset, case.classes)
    return preds


def compare_saved(dataset: Dataset, out: Path) -> None:
    """One line for the dataset: each tool's test metrics and ours against every rival (paired intervals), all
    from the predictions earlier runs left in ``out``; nothing is trained."""
    case = load_split(dataset, out / "data")
    preds = {tool: read_predictions(path, dataset, case.classes) for tool in TOOLS
             if (path := out / "runs" / dataset.name / tool / "preds.csv").exists()}
    row: dict[str, Any] = {"bench": "suite-compare", "dataset": dataset.name, "task": dataset.task,
                           **{tool: scores(dataset.task, case.y, p) for tool, p in preds.items()}}
    for rival in (r for r in RIVALS if "ours" in preds and r in preds):
        row[f"vs_{rival}"] = {m.name: paired_interval(m, case.y, preds["ours"], preds[rival])
                              for m in METRICS[dataset.task]}
    emit(row)


def run_dataset(dataset: Dataset, tools: Sequence[str], budget_s: float, seed: int, out: Path,
                saved_rivals: bool = False, pythons: Mapping[str, str] | None = None) -> bool:
    """Every tool on the dataset's split, a line each (ours last, with its intervals); True if all succeeded.
    ``saved_rivals``: a rival not run now is compared from its predictions of an earlier run in ``out``;
    ``pythons``: the interpreter that runs a rival, where it is not this one."""
    case = load_split(dataset, out / "data")
    rows: dict[str, dict[str, Any]] = {}
    preds = saved_predictions(case, tools, out) if saved_rivals else {}
    for tool in tools:
        folder = out / "runs" / dataset.name / tool
        shutil.rmtree(folder, ignore_errors=True)
        log(f"{dataset.name}: {tool} for {budget_s:g} s")
        row = (run_ours(case, budget_s, seed, folder, out / "prefect-home") if tool == "ours"
               else run_rival(case, tool, budget_s, seed, folder, (pythons or {}).get(tool, sys.executable)))
        if row["exit_code"] == 0:
            try:
                preds[tool] = read_predictions(folder / "preds.csv", dataset, case.classes)
                row.update(scores(dataset.task, case.y, preds[tool]))
            except ValueError as exc:  # a layout we do not read is this tool's failure, not the suite's
                row.update(exit_code=1, error=f"scoring: {exc}")
        rows[tool] = row
        if tool != "ours":
            emit(in_print_order(row))
    if "ours" in rows:
        for rival in (r for r in RIVALS if "ours" in preds and r in preds):
            log(f"{dataset.name}: bootstrap ours vs {rival}")
            rows["ours"][f"vs_{rival}"] = {m.name: paired_interval(m, case.y, preds["ours"], preds[rival])
                                           for m in METRICS[dataset.task]}
        emit(in_print_order(rows["ours"]))
    return all(row["exit_code"] == 0 for row in rows.values())


def names(text: str, known: Sequence[str], what: str, parser: argparse.ArgumentParser) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    if unknown := [n for n in chosen if n not in known]:
        parser.error(f"unknown {what} {', '.join(unknown)}: use {','.join(known)}")
    return chosen


def has_module(python: str, module: str) -> bool:
    """Whether the interpreter ``python`` finds ``module`` (looked for without importing it)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)"
    try:
        return subprocess.run([python, "-c", probe, module], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated ({','.join(DATASETS)})")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated ({','.join(TOOLS)})")
    parser.add_argument("--max-runtime-secs", type=float, default=120.0, help="every tool's budget per run (120)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "automl-suite",
                        help="cached splits and run folders (default: automl-suite in the temp folder)")
    parser.add_argument("--seed", type=int, default=1, help="every tool's seed (1); the splits are fixed")
    parser.add_argument("--saved-rivals", action="store_true",
                        help="compare ours with the predictions a rival not in --tools left in --out")
    parser.add_argument("--compare", action="store_true",
                        help="train nothing: ours against every rival, from the predictions earlier runs left in --out")
    parser.add_argument("--autogluon-python", default=os.environ.get(AUTOGLUON_PYTHON, sys.executable),
                        help=f"the interpreter of a virtualenv with autogluon.tabular (${AUTOGLUON_PYTHON}, "
                             "else this one)")
    args = parser.parse_args(argv)
    datasets = names(args.datasets, list(DATASETS), "datasets", parser)
    if args.compare:
        for name in datasets:
            compare_saved(DATASETS[name], args.out)
        return 0
    tools = names(args.tools, TOOLS, "tools", parser)
    pythons = {"autogluon": args.autogluon_python}
    for tool in (t for t in RIVALS if t in tools):
        python = pythons.get(tool, sys.executable)
        if not has_module(python, RIVAL_MODULES[tool]):
            fix = (f"install it in a virtualenv of its own (see the docstring) and give its interpreter as "
                   f"--autogluon-python or ${AUTOGLUON_PYTHON}" if tool == "autogluon"
                   else 'install the bench extra: pip install -e ".[bench]"')
            print(f"error: {RIVAL_MODULES[tool]} not found by {python}; {fix}", file=sys.stderr)
            return 2
    ok = [run_dataset(DATASETS[name], tools, args.max_runtime_secs, args.seed, args.out, args.saved_rivals, pythons)
          for name in datasets]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
