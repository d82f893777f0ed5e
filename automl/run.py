"""``python -m automl.run DATASET_OR_PATH``: the AutoML run as a Prefect flow.

Inputs are validated here, before TensorFlow loads, so a mistake costs a second. The
Prefect API is found or started in the background meanwhile (``flows.server``): a
configured ``PREFECT_API_URL``, a local ``prefect server start``, or Prefect's temporary
server with a start-up timeout long enough for a fresh or busy machine.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from automl.config import DISTRIBUTE, ENGINES, FAN_OUT_DEPLOYMENT, TUNERS, VALIDATIONS

__all__ = ["main", "build_parser"]

_STARTED_AT = time.time()  # the budget counts from process start, not from flow start


class _OneLineParser(argparse.ArgumentParser):
    """A bad flag is bad input like any other: one ``error:`` line, exit code 2 (argparse adds its usage lines)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m automl.run",
        description="Search Keras networks and reference models on a dataset; write a ranked, "
                    "exported leaderboard under --output (default runs/<project>).",
        epilog="Built-in datasets: diabetes, titanic, diabetes-progression, digits. Example: "
               "python -m automl.run data.csv --target label --max-runtime-secs 300")
    _data_arguments(p)
    p.add_argument("--max-runtime-secs", type=float, default=None,
                   help="wall-time budget for the whole run, start-up included (default 120; 200 for images)")
    p.add_argument("--max-models", type=int, default=None,
                   help="at most this many search trials of each searched family, networks and gradient boosting "
                        "(the reference models always train)")
    p.add_argument("--max-runtime-secs-per-model", type=float, default=None,
                   help="no single model (search trial, refit, reference model) trains longer than this")
    p.add_argument("--engine", choices=ENGINES, default="optuna", help="search engine (default optuna)")
    p.add_argument("--sort-metric", help="leaderboard sort metric (default auc / mean_per_class_error / "
                                         "mean_residual_deviance by task)")
    p.add_argument("--validation", choices=VALIDATIONS, default="auto",
                   help="how every leaderboard row is scored: cv (k-fold, out-of-fold), holdout, or auto: cv while "
                        "rows x columns <= 3000 x budget seconds, else a holdout (default auto)")
    p.add_argument("--nfolds", type=int, default=None, help="cross-validation folds for every row (default 5; "
                                                              "implies --validation cv)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--include-algos", type=_names, help="only these families, comma-separated: GLM,GBM,DRF,XRT,"
                                                         "SVM,MLP,CNN,StackedEnsemble")
    p.add_argument("--exclude-algos", type=_names, help="all families but these, comma-separated")
    p.add_argument("--leaderboard-frame", help="score the leaderboard on this CSV/Parquet holdout instead of CV")
    p.add_argument("--tuner", choices=TUNERS, default="hyperband",
                   help="Keras Tuner's algorithm, with --engine keras-tuner (default hyperband)")
    p.add_argument("--workers", type=int, default=None,
                   help="trial worker processes on one study (default: the number of cores for budgets "
                        "of 90 s or more, else none: trials run in the run's process; optuna engine)")
    p.add_argument("--population", type=_population, default=None, metavar="P|auto",
                   help="MLP trials trained at once in one compiled graph (optuna engine; default auto: chosen per "
                        "round from the width, batch size, rows and time left, up to 32 on a CPU; 1: one at a time)")
    p.add_argument("--storage", help="share the study through a database, e.g. postgresql://user@host/db; "
                                     "join from other machines with python -m automl.worker")
    p.add_argument("--fan-out", type=int, default=0, metavar="N",
                   help="also run the search in N flow runs of the Prefect deployment --fan-out-deployment (its "
                        "work pool's workers, on any machine); needs --storage URL and a Prefect server "
                        "(PREFECT_API_URL)")
    p.add_argument("--fan-out-deployment", default=FAN_OUT_DEPLOYMENT, metavar="FLOW/DEPLOYMENT",
                   help=f"the search-worker deployment to fan out to (default {FAN_OUT_DEPLOYMENT}, "
                        "in prefect.yaml)")
    p.add_argument("--distribute", choices=DISTRIBUTE, help="train each network across all GPUs (or TPU)")
    p.add_argument("--tensorboard", metavar="DIR", help="write each search trial's validation curve for "
                                                        "TensorBoard under DIR/trial_<n>")
    p.add_argument("--project", help="project name (default: the dataset name)")
    p.add_argument("--output", help="output folder (default runs/<project>)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="no progress lines (default when CI=true)")
    noise.add_argument("--verbose", action="store_true", help="progress lines even when CI=true, and every "
                                                               "library's warnings")
    return p


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """What to read and what to predict."""
    p.add_argument("dataset", help="a built-in dataset name, a .csv/.parquet file, a folder of them, a quoted glob "
                                   "pattern ('data/2026-*.parquet'), a database URL with --query "
                                   "(postgresql://user@host:5432/db), or images: an .npz file (x, y) or a folder "
                                   "with one subfolder per class")
    p.add_argument("--target", help="column to predict (required for files)")
    p.add_argument("--query", metavar="SQL",
                   help="the SELECT whose rows are the table, run read-only on the database URL given as dataset; "
                        "the URL may hold ${VAR} placeholders (or be one) read from the environment; PGPASSWORD works")
    p.add_argument("--newest-days", type=float, default=None, metavar="N",
                   help="only the newest N days: with --date-column, the rows within N days of its newest date; "
                        "without, the files modified in the last N days")
    p.add_argument("--date-column", metavar="COL", help="the date column --newest-days counts back from")
    p.add_argument("--task", choices=("binary", "multiclass", "regression", "image"),
                   help="override the inferred task type")


def _population(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of members or auto, but got {text!r}") from None


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _fail(message: str) -> int:
    from automl.warm import discard

    discard()
    print(f"error: {message}", file=sys.stderr)
    return 2


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as :class:`automl.config.RunConfig` options (one name each)."""
    flat = {k: v for k, v in vars(args).items() if k not in ("dataset", "quiet", "output")}
    flat["verbose"] = True if args.verbose else False if args.quiet else None
    return flat | {"output_dir": args.output, "started_at": _STARTED_AT}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from automl.config import RunConfig
    from automl.errors import InputError
    from flows.server import ApiStartup, ServerUnavailable

    try:
        config = RunConfig.from_options(dataset=args.dataset, **options(args))
        _check_source(config)
    except InputError as exc:  # a bad option or a missing file costs no server start-up
        return _fail(str(exc))
    _warm_up(config)
    api = ApiStartup().begin()  # the Prefect API starts while the data is loaded and checked
    if config.search.fan_out and api.kind.startswith("temporary"):
        api.stop()
        return _fail(f"--fan-out {config.search.fan_out} needs a Prefect server that the work pool's workers reach, "
                     "but none is configured; start one (prefect server start) and set PREFECT_API_URL")
    try:
        _check_data(config)
    except InputError as exc:
        return _fail(str(exc))
    from flows.automl_flow import automl_flow  # Prefect's ~3 s import overlaps the server's start-up

    if api.slow_start and {"MLP", "CNN"} & config.evaluation.algos:
        from automl.quiet import import_tensorflow

        # A first run's server migrates its database for 10-60 s: TensorFlow's ~6 s import fits inside (this
        # process ranks the networks: its first MLP right after GLM_1, automl.jobs). On a warm machine the server
        # answers in ~4 s: imported here, it delayed the data by 5 s, and the workers' first trials with it (a
        # 30 s run's start-up took 11.7 s); the first network's job imports it after GLM_1 instead.
        import_tensorflow(args.verbose)
    # What Prefect imports at a flow run's first call (~0.35 s): here it overlaps the temporary server's start-up.
    import fastapi.encoders  # noqa: F401  (Prefect serializes flow parameters with it)
    import prefect.flow_engine  # noqa: F401
    import prefect.task_engine  # noqa: F401
    try:
        api.wait()
    except ServerUnavailable as exc:
        return _fail(str(exc))

    _one_line_errors()
    try:
        summary = automl_flow(dataset=config.dataset, options={k: v for k, v in config.options().items()
                                                               if k != "dataset"})
    except InputError as exc:
        return _fail(str(exc))
    except OSError as exc:  # a full disk, a folder without write permission: outputs are atomic, none is half-written
        return _fail(f"cannot write {exc.filename or 'the outputs'}: {exc.strerror or exc}; free disk space or "
                     "choose another --output")
    _print_result(summary)
    # Skip the interpreter's final collection of TensorFlow's object graph: 2-8 s at exit, after the budget.
    gc.freeze()
    return 0


def _warm_up(config: Any) -> None:
    """Start the search's worker processes now: their TensorFlow import (7-9 s) overlaps the Prefect API's start-up
    and the data's checks, where it had delayed a 30 s run's first trial to 17 s after the workers started."""
    from automl.state import expected_workers
    from automl.warm import warm_up

    warm_up(expected_workers(config))


class _NoTraceback(logging.Filter):
    """Prefect logs a failed task's traceback; for errors the CLI reports in one line, the line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        from automl.errors import InputError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, InputError | OSError):
            return False
        return not any(kind in record.getMessage() for kind in ("InputError", "OSError(", "[Errno"))


def _one_line_errors() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_NoTraceback())


def _check_source(config: Any) -> None:
    """A dataset that is neither a built-in name, an existing path, a glob pattern nor a database URL fails now,
    with ``load``'s own message; so does an ``--output`` that cannot be written.

    Without importing pandas for a name that exists: the server's start-up begins right after.
    """
    from automl.config import cards_dir

    if config.output_dir is not None:
        _check_output(config.output_dir)
    # os.path's checks are False for a path too long to look up (Path.is_file raises): load names that case.
    # A glob pattern or a query is read by _check_data, while the server starts.
    if not os.path.isfile(cards_dir() / f"{config.dataset}.yaml") and not os.path.exists(config.dataset) \
            and config.source.kind == "file":
        from automl.data import load

        load(config.source, config.target, config.task)  # raises at once: there is nothing to read


def _check_output(folder: str) -> None:
    """An output folder that is a file, or that cannot be made or written in, fails now: a run finds out only at its
    first write, which may be at its end.

    The folder, or its nearest existing parent, is probed by making and removing a folder in it: ``os.access`` says
    yes to root on a file system that refuses everyone (``/proc``, a read-only mount).
    """
    from automl.errors import InputError

    existing = Path(os.path.abspath(folder))
    while True:
        try:
            mode = existing.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):  # made by the run; "/" always exists
            existing = existing.parent
        except OSError as exc:  # a name too long, a folder on the way that cannot be read
            raise InputError(f"--output {folder}: cannot be looked up ({exc.strerror}); choose another folder"
                             ) from None
    where = "" if str(existing) == os.path.abspath(folder) else f" ({existing})"
    if not stat.S_ISDIR(mode):
        raise InputError(f"--output {folder}: is a file{where}, not a folder; choose another --output or move the "
                         "file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".automl-probe-", dir=existing))
    except OSError as exc:
        raise InputError(f"--output {folder}: cannot write in {existing} ({exc.strerror}); choose another --output "
                         "or make it writable") from None


def _check_data(config: Any) -> None:
    """Load the data and check the options that depend on it, before any training (InputError if wrong)."""
    from automl.data import load
    from automl.errors import InputError
    from automl.metrics import get
    from automl.preprocess import infer_schema
    from automl.state import load_leaderboard_frame

    schema = infer_schema(load(config.source, config.target, config.task))
    if config.evaluation.sort_metric:
        try:
            get(config.evaluation.sort_metric, schema.task)
        except ValueError as exc:  # an unknown --sort-metric
            raise InputError(f"--sort-metric: {exc}") from None
    if config.evaluation.leaderboard_frame:
        load_leaderboard_frame(config.evaluation.leaderboard_frame, schema)


def _print_result(summary: dict) -> None:
    import pandas as pd

    out = summary["output_dir"]
    board = pd.read_csv(os.path.join(out, "leaderboard.csv"))
    metric = summary["sort_metric"]
    print(board[["model_id", metric, "algo"]].head(10).to_string(index=False))
    print(f"\nleader {summary['leader']}; leaderboard {os.path.join(out, 'leaderboard.csv')}; "
          f"models {os.path.join(out, 'models')}; {summary['elapsed_secs']}s")


if __name__ == "__main__":
    sys.exit(main())
