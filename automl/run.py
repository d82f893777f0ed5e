"""``python -m automl.run DATASET_OR_PATH``: the AutoML run as a Prefect flow.

Inputs are validated here, before Prefect or TensorFlow load, so a mistake costs a
second, not a server start-up. With no Prefect API configured, Prefect runs the flow
on a temporary local server.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

from automl.engines import ENGINES

__all__ = ["main", "build_parser"]

_STARTED_AT = time.time()  # the budget counts from process start, not from flow start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m automl.run",
        description="Search Keras networks and reference models on a dataset; write a ranked, "
                    "exported leaderboard under --output (default runs/<project>).",
        epilog="Built-in datasets: diabetes, titanic, diabetes-progression, digits. Example: "
               "python -m automl.run data.csv --target label --max-runtime-secs 300")
    p.add_argument("dataset", help="a built-in dataset name, a .csv/.parquet file, or images: an .npz file "
                                   "(x, y) or a folder with one subfolder per class")
    p.add_argument("--target", help="column to predict (required for files)")
    p.add_argument("--task", choices=("binary", "multiclass", "regression", "image"),
                   help="override the inferred task type")
    p.add_argument("--max-runtime-secs", type=float, default=None,
                   help="wall-time budget for the whole run, start-up included (default 120; 200 for images)")
    p.add_argument("--max-models", type=int, default=None,
                   help="at most this many search trials (the reference models always train)")
    p.add_argument("--engine", choices=ENGINES, default="optuna", help="search engine (default optuna)")
    p.add_argument("--sort-metric", help="leaderboard sort metric (default auc / mean_per_class_error / "
                                         "mean_residual_deviance by task)")
    p.add_argument("--nfolds", type=int, default=5, help="cross-validation folds for every row (default 5)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--include-algos", type=_names, help="only these families, comma-separated: GLM,GBM,DRF,XRT,"
                                                         "SVM,MLP,CNN,StackedEnsemble")
    p.add_argument("--exclude-algos", type=_names, help="all families but these, comma-separated")
    p.add_argument("--leaderboard-frame", help="score the leaderboard on this CSV/Parquet holdout instead of CV")
    p.add_argument("--tuner", choices=("hyperband", "bayesian", "random"), default="hyperband",
                   help="Keras Tuner's algorithm, with --engine keras-tuner (default hyperband)")
    p.add_argument("--workers", type=int, default=None,
                   help="trial worker processes on one study (default: the number of cores; optuna engine)")
    p.add_argument("--storage", help="share the study through a database, e.g. postgresql://user@host/db; "
                                     "join from other machines with python -m automl.worker")
    p.add_argument("--distribute", choices=("mirrored",), help="train each network across all GPUs (or TPU)")
    p.add_argument("--tensorboard", metavar="DIR", help="write each search trial's validation curve for "
                                                        "TensorBoard under DIR/trial_<n>")
    p.add_argument("--project", help="project name (default: the dataset name)")
    p.add_argument("--output", help="output folder (default runs/<project>)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="no progress lines (default when CI=true)")
    noise.add_argument("--verbose", action="store_true", help="progress lines even when CI=true")
    return p


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from automl.data import load
    from automl.errors import InputError
    from automl.metrics import get
    from automl.pipeline import AutoML, load_leaderboard_frame
    from automl.preprocess import infer_schema

    settings = {"max_runtime_secs": args.max_runtime_secs, "max_models": args.max_models, "seed": args.seed,
                "nfolds": args.nfolds, "sort_metric": args.sort_metric, "engine": args.engine,
                "project": args.project, "output_dir": args.output,
                "verbose": True if args.verbose else False if args.quiet else None,
                "include_algos": args.include_algos, "exclude_algos": args.exclude_algos,
                "leaderboard_frame": args.leaderboard_frame, "tuner": args.tuner, "distribute": args.distribute,
                "workers": args.workers, "storage": args.storage, "tensorboard": args.tensorboard}
    try:
        AutoML(**settings)  # checks the numbers and names
        ds = load(args.dataset, args.target, args.task)
        schema = infer_schema(ds)
        if args.sort_metric:
            get(args.sort_metric, schema.task)
        if args.leaderboard_frame:
            load_leaderboard_frame(args.leaderboard_frame, schema)
    except InputError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # an unknown --sort-metric
        return _fail(f"--sort-metric: {exc}")

    from flows.automl_flow import automl_flow

    try:
        summary = automl_flow(dataset=args.dataset, target=args.target, task_type=args.task,
                              started_at=_STARTED_AT, **settings)
    except InputError as exc:
        return _fail(str(exc))
    _print_result(summary)
    # Skip the interpreter's final collection of TensorFlow's object graph: 2-8 s at exit, after the budget.
    gc.freeze()
    return 0


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
