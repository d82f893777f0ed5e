"""Search trials per minute with 1 and 2 worker processes on diabetes, and the memory of a worker.

Each setting runs in a fresh child process: the AutoML search stage only (MLP, the default
journal storage in a temporary folder) with a budget whose search share is ``--seconds``
(the search stops when 30 % of the budget is left, the share kept for refits). While it runs,
a thread polls ``/proc`` for the peak RSS (``VmHWM``) of every ``automl.worker`` process the
search starts; with 1 worker the trials run in the searching process, whose own peak is
reported. Trials per minute count finished trials (complete, pruned, failed) over the search
stage's wall time, worker start-up included; ``steady_trials_per_min`` counts them from the
first trial's start to the last trial's end. A third run, 1 worker with 1 TensorFlow thread
(what each of 2 workers gets on 2 cores), separates the gain of parallel processes from the
gain of fewer threads per tiny network. Prints one JSON line on stdout.

With ``--fan-out-storage URL`` (a PostgreSQL database) it also measures the search through
Prefect, with the real CLI: a ``prefect server start``, the ``automl-search`` deployment and two
``prefect worker start`` processes on this machine, then ``--workers 2`` (local processes) and
``--workers 0 --fan-out 2`` (the same two workers as flow runs on the pool) at the same budget.
``trials_per_min`` there counts the study's finished trials over the search stage (from its first
event to "search stopped"), worker start-up included: the overhead of going through Prefect.

    python bench/scale.py [--seconds 60] [--workers 1,2] [--no-single-thread] [--fan-out-storage URL]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, child_env, log, prefect_server  # noqa: E402,F401  (sets up sys.path first)

POLL_SECONDS = 0.25



def _status_kb(pid: int | str, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``: peak resident memory), None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class WorkerMemory(threading.Thread):
    """Polls the peak RSS of this process's ``automl.worker`` children until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.done.wait(POLL_SECONDS):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    stat = (entry / "stat").read_text()
                    if stat.rpartition(")")[2].split()[1] != me:
                        continue
                    if b"automl.worker" not in (entry / "cmdline").read_bytes():
                        continue
                except (OSError, IndexError):
                    continue
                peak = _status_kb(entry.name, "VmHWM")
                if peak is not None:
                    self.peak_kb[int(entry.name)] = max(peak, self.peak_kb.get(int(entry.name), 0))

    def stop(self) -> dict[int, int]:
        self.done.set()
        self.join()
        return self.peak_kb


def one_setting(workers: int, seconds: float, threads: int | None = None) -> dict[str, Any]:
    """Run the search stage with ``workers`` processes for about ``seconds``; measure it.

    ``threads``: TensorFlow threads of the searching process (with 1 worker: the trials' threads).
    """
    from automl import search as search_stage
    from automl.config import RunConfig
    from automl.search import KEEP_SHARE
    from automl.state import start

    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras  # noqa: F401  - the search pays this import itself; keep it out of the measurement

    with tempfile.TemporaryDirectory(prefix="automl-scale-") as tmp:
        # The search stops when KEEP_SHARE of the budget is left (kept for cross-validating its configurations);
        # the clock (which worker processes read from the config) starts with the search.
        config = RunConfig.from_options(dataset="diabetes", max_runtime_secs=seconds / (1 - KEEP_SHARE["beside"]),
                                        workers=workers, include_algos=["MLP"], project="scale", output_dir=tmp,
                                        seed=1, verbose=False, started_at=time.time())
        state = start(config)
        memory = WorkerMemory()
        memory.start()
        begin = time.monotonic()
        search_stage.start_workers(state)
        records = (search_stage.join_search(state) if search_stage.in_background(state)
                   else search_stage.search_slice(state, state.budget.started + seconds))
        wall = time.monotonic() - begin
        peaks = memory.stop()
        finished = [t for t in _study(Path(tmp) / "search").trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    states = {s: sum(t.state.name == s for t in finished) for s in ("COMPLETE", "PRUNED", "FAIL")}
    if workers == 1:  # the trials ran here
        peaks = {os.getpid(): _status_kb(os.getpid(), "VmHWM") or 0}
    complete = [t.duration.total_seconds() for t in finished if t.state.name == "COMPLETE"]
    return {"workers": workers, "tf_threads": threads or max(1, (os.cpu_count() or 1) // workers),
            "search_s": round(wall, 1), "trials": len(records), "states": states,
            "trials_per_min": round(60 * len(records) / wall, 1),
            "steady_trials_per_min": round(60 * len(finished) / span, 1) if span > 0 else None,
            "median_trial_s": round(statistics.median(t.duration.total_seconds() for t in finished), 2),
            "median_complete_trial_s": round(statistics.median(complete), 2) if complete else None,
            "median_gap_between_trials_s": _median_gap(finished),
            "worker_processes": len(peaks), "worker_peak_rss_mb": [round(kb / 1024) for kb in peaks.values()]}


def _median_gap(trials: list[Any]) -> float | None:
    """Median seconds a worker spends between the end of one trial and the start of its next."""
    by_worker: dict[str, list[Any]] = {}
    for trial in sorted(trials, key=lambda t: t.datetime_start):
        by_worker.setdefault(trial.user_attrs.get("worker", ""), []).append(trial)
    gaps = [(b.datetime_start - a.datetime_complete).total_seconds() for runs in by_worker.values()
            for a, b in zip(runs, runs[1:], strict=False)]
    return round(statistics.median(gaps), 3) if gaps else None


def _study(folder: Path) -> Any:
    """The one study in the search folder's journal."""
    import optuna

    from automl.engines.optuna_engine import open_study

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    (name,) = optuna.study.get_all_study_names(storage)
    return open_study(None, folder, name)


def via_prefect(storage: str, seconds: float) -> list[dict[str, Any]]:
    """Local ``--workers 2`` against ``--workers 0 --fan-out 2`` through the CLI, on one PostgreSQL study each."""
    import uuid

    import optuna
    import pandas as pd

    from automl.search import KEEP_SHARE

    results = []
    with tempfile.TemporaryDirectory(prefix="automl-scale-pool-") as tmp, prefect_server():
        env = child_env(Path(tmp))
        prefect = [sys.executable, "-m", "prefect"]
        subprocess.run([*prefect, "work-pool", "create", "automl-search", "--type", "process", "--overwrite"],
                       env=env, check=True, capture_output=True)
        subprocess.run([*prefect, "--no-prompt", "deploy", "--name", "automl-search"], cwd=ROOT,
                       env={**env, "PWD": str(ROOT)}, check=True, capture_output=True)
        pool = [subprocess.Popen([*prefect, "worker", "start", "--pool", "automl-search"], cwd=tmp,
                                 env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            for mode, flags in (("workers 2", ["--workers", "2"]), ("fan-out 2", ["--workers", "0", "--fan-out", "2"])):
                project = f"scale-{uuid.uuid4().hex[:8]}"
                out = Path(tmp) / project
                log(f"search through the CLI, {mode}, ~{seconds:g}s ...")
                subprocess.run([sys.executable, "-m", "automl.run", "diabetes", "--include-algos", "MLP", "--storage",
                                storage, "--max-runtime-secs", str(round(seconds / (1 - KEEP_SHARE["beside"]))),
                                "--project", project, "--output", str(out), *flags], cwd=tmp, env=env, check=True,
                               capture_output=True)
                events = pd.read_csv(out / "event_log.csv", parse_dates=["timestamp"])
                search = events[events["stage"] == "search"]
                end = search[search["message"].str.startswith("search stopped")]["timestamp"].iloc[0]
                window = (end - search["timestamp"].iloc[0]).total_seconds()
                rdb = optuna.storages.RDBStorage(storage)
                (name,) = [n for n in optuna.study.get_all_study_names(rdb) if n.startswith(f"{project}-")]
                finished = [t for t in optuna.load_study(study_name=name, storage=rdb).trials if t.state.is_finished()
                            and "duplicate_of" not in t.user_attrs]
                optuna.delete_study(study_name=name, storage=rdb)
                rdb.engine.dispose()
                span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished))
                trials = pd.read_csv(out / "trials.csv")
                results.append({"mode": mode, "search_s": round(window, 1), "trials": len(finished),
                                "trials_per_min": round(60 * len(finished) / window, 1),
                                "steady_trials_per_min": round(60 * len(finished) / span.total_seconds(), 1),
                                "trials_per_worker": trials["worker"].value_counts().to_dict(),
                                "remote_states": next((m for m in search["message"]
                                                       if m.startswith("remote workers: ")), None)})
                log(json.dumps(results[-1]))
        finally:
            for proc in pool:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=60)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="search seconds per setting (60)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated (1,2)")
    parser.add_argument("--no-single-thread", action="store_true",
                        help="skip the extra 1-worker run with 1 TensorFlow thread (the per-worker setting of 2)")
    parser.add_argument("--fan-out-storage", metavar="URL",
                        help="also compare --workers 2 with --fan-out 2 through Prefect on this PostgreSQL database")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # measure one setting in this process
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_setting(args.one, args.seconds, args.threads)))
        return 0

    settings: list[tuple[int, int | None]] = [(int(w), None) for w in args.workers.split(",")]
    if not args.no_single_thread and (os.cpu_count() or 1) > 1:
        settings.append((1, 1))  # separates the gain of parallel processes from that of fewer threads
    load_before = os.getloadavg()
    runs = []
    for workers, threads in settings:  # one fresh process per setting: no warm caches, clean memory peaks
        log(f"search with {workers} worker(s), TensorFlow threads {threads or 'default'}, ~{args.seconds:g}s ...")
        command = [sys.executable, __file__, "--one", str(workers), "--seconds", str(args.seconds)]
        proc = subprocess.run(command + (["--threads", str(threads)] if threads else []), stdout=subprocess.PIPE,
                              text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log(json.dumps(runs[-1]))
    by_count = {r["workers"]: r for r in reversed(runs)}  # the default-threads run of each count
    result: dict[str, Any] = {"bench": "scale", "date": dt.datetime.now().isoformat(timespec="seconds"),
                              "dataset": "diabetes", "algos": ["MLP"], "storage": "journal",
                              "search_seconds": args.seconds, "runs": runs}
    if 1 in by_count and 2 in by_count:
        result["speedup_2_vs_1"] = round(by_count[2]["trials_per_min"] / by_count[1]["trials_per_min"], 2)
        steady = by_count[1]["steady_trials_per_min"], by_count[2]["steady_trials_per_min"]
        result["steady_speedup_2_vs_1"] = round(steady[1] / steady[0], 2) if all(steady) else None
        single = [r for r in runs if r["workers"] == 1 and r["tf_threads"] == 1 and r is not by_count[1]]
        if single:
            result["speedup_2_vs_1_single_thread"] = round(by_count[2]["trials_per_min"]
                                                           / single[0]["trials_per_min"], 2)
    if args.fan_out_storage:
        result["through_prefect"] = via_prefect(args.fan_out_storage, args.seconds)
    peaks = [mb for r in runs if r["workers"] > 1 for mb in r["worker_peak_rss_mb"]]
    result["worker_peak_rss_mb_max"] = max(peaks) if peaks else None
    import tensorflow as tf

    result["machine"] = {"cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                         "optuna": importlib.metadata.version("optuna"), "python": platform.python_version(),
                         "loadavg_1m_before": round(load_before[0], 2),
                         "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
