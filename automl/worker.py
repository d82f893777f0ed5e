"""``python -m automl.worker``: run trials of a running search, on this machine or another.

    python -m automl.worker --project diabetes --storage postgresql://user@db-host/automl

The worker finds the project's newest study in the storage, rebuilds the search data
from the study's spec (the dataset must be reachable under the same name or path),
and runs trials until the search is done. The run that started the search collects
every worker's trials into its leaderboard.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m automl.worker", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--project", help="join the newest study of this project")
    where.add_argument("--study", help="join this study (its exact name)")
    p.add_argument("--storage", required=True,
                   help="the search's storage: a database URL (postgresql://…) or a study.journal file")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow threads for this worker")
    p.add_argument("--trials", type=int, default=None, help="exit after this many trials (to be restarted)")
    p.add_argument("--index", type=int, default=0,
                   help="this worker's number: it samples with seed + index, so workers propose distinct "
                        "configurations (give each worker of a search its own)")
    p.add_argument("--label", help="this worker's name on its trials (trials.csv's worker column; default host:pid)")
    p.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)  # started by a local search
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from automl.engines.optuna_engine import WorkerExit
    from automl.errors import InputError

    try:
        return _work(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return WorkerExit.BAD_INPUT


def _work(args: argparse.Namespace) -> int:
    import joblib

    from automl import devices
    from automl.budget import Budget
    from automl.config import RunConfig
    from automl.engines.optuna_engine import StudyAttr, StudyStop, WorkerExit, open_study, work
    from automl.errors import InputError
    from automl.events import EventLog
    from automl.search import search_data, search_job
    from automl.state import start
    from automl.worker_files import load_worker_files

    journal = not args.storage.partition("://")[1]
    url, folder = (None, Path(args.storage).parent) if journal else (args.storage, Path("."))
    if journal and not Path(args.storage).is_file():
        raise InputError(f"--storage {args.storage}: no such journal file; give the search's study.journal")
    name = args.study or _newest_study(url, folder, args.project)
    spec = open_study(url, folder, name).user_attrs.get(StudyAttr.SPEC)
    if spec is None:
        raise InputError(f"study {name!r} has no automl spec; join a search started by python -m automl.run")
    from automl.quiet import import_tensorflow

    import_tensorflow()
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    config = RunConfig.from_json(spec["config"]).replace(verbose=False)
    local = spec.get("local")
    if local and Path(local, "job.joblib").is_file():
        # A worker of this machine: the run wrote the search split and the job for it; the study's spec
        # stays what says how long and how many trials to run.
        job, data = load_worker_files(Path(local))
        job = replace(job, config=config)
        budget = Budget.since_wall_time(float(config.max_runtime_secs or 0), float(config.started_at or 0))
    else:
        source = spec["data"]
        state = start(config, joblib.load(source) if source.endswith(".joblib") else source, events=EventLog(False))
        if state.dataset.fingerprint != spec["fingerprint"]:
            raise InputError(f"{source}: differs from the data the search started on; give workers the same file")
        job, data, budget = search_job(state), search_data(state), state.budget
    study = open_study(url, folder, name, job, worker=args.index)
    # Each worker trains on its own device of the plan (on a machine with several GPUs: one GPU each).
    placement = devices.plan(devices.detect(), max(config.search.n_workers, 1), config.search.distribute)
    devices.configure(placement)
    print(f"worker {args.index}: {placement}", flush=True)
    with devices.trial_context(args.index, placement):
        reason = work(study, job, data, StudyStop(budget, job), n_trials=args.trials, orphan_check=args.supervised,
                      label=args.label)
    return WorkerExit.DONE if reason is not None else WorkerExit.RECYCLE


def _newest_study(url: str | None, folder: Path, project: str) -> str:
    import optuna

    from automl.engines.optuna_engine import StudyAttr, open_storage
    from automl.errors import InputError

    # Only searches that workers can join carry a spec: the run's GBM search (``<study>-gbm``) has none.
    summaries = [s for s in optuna.get_all_study_summaries(open_storage(url, folder), include_best_trial=False)
                 if s.study_name.startswith(f"{project}-") and StudyAttr.SPEC in s.user_attrs]
    if not summaries:
        raise InputError(f"no search of project {project!r} in that storage; start one with "
                         f"python -m automl.run ... --project {project} --storage URL")
    return max(summaries, key=lambda s: s.datetime_start or datetime.min).study_name


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from automl.warm import WARM_FLAG, serve

    sys.exit(serve(main) if sys.argv[1:] == [WARM_FLAG] else main())
