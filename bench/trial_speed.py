"""Seconds per MLP search trial on the Pima diabetes data, at exactly 100 epochs.

Trains ``automl.training.KerasNetwork`` the way a search trial does (validation AUC as
the monitor, ``clear_session(free_memory=False)`` afterwards) with early stopping
disabled, for batch 32 (``MLP_WARM_STARTS[0]``) and batch 128, scoring the
validation rows after every epoch (``EPOCH_CHUNK=1``) and after every 5 epochs (the
default chunking). The first trial of each setting is a warm-up and is excluded from
the median. A second case, ``deadline_overrun``, trains the default CNN on random
28x28 images (an epoch far longer than the time left) and measures how many seconds
past its deadline the fit returns. Prints one JSON line per case on stdout; progress
goes to stderr.

    python bench/trial_speed.py [--trials 5] [--quick]
    python bench/trial_speed.py --population 1,8,32,128 [--data diabetes,churn] [--start 2]
    python bench/trial_speed.py --packed 1,8,32 [--data diabetes,churn] [--start 2]
    python bench/trial_speed.py --cnn [--stored]

``--packed K,...`` times one packed ensemble of K copies of the warm start (``ensemble_size``, one graph trained
by the one-at-a-time trainer, as a search trial of that size trains) for 100 epochs: members trained per minute.

``--cnn`` times the default CNN (``CNN_WARM_STARTS[0]``) on 4,000 random 28x28 grey images (speed does not depend
on the pixels): seconds per epoch for each setting of processes x TensorFlow threads per process (1x1, 1x2, 2x1:
two processes each training its own network at once, as two search workers do) and batch size (32, 128), and
images trained per second by all processes together. Each setting runs in fresh processes (threads are fixed when
TensorFlow starts). With ``--stored`` each setting is timed twice: the images in memory (``feed: memory``), and
stored on disk as uint8 and streamed a batch at a time by ``tf.data`` as an image folder's are (``feed: stored``,
:class:`automl.image_store.ImageRows`).

``--start K`` times the K-th MLP warm start (0: the 2x64 ReLU network; 2: the same with periodic embeddings).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, log  # noqa: E402,F401  (sets up sys.path first)

EPOCHS = 100
BATCH_SIZES = (32, 128)
EPOCH_CHUNKS = (1, 5)
#: The deadline case: images as in the issue's digits run, and the seconds left when the fit starts.
DEADLINE_IMAGES = 5000
DEADLINE_SECONDS = 10.0

#: The CNN case: images, epochs timed after a one-epoch warm-up, and the (processes, threads) settings.
CNN_IMAGES, CNN_EPOCHS = 4000, 3
CNN_SETTINGS = ((1, 1), (1, 2), (2, 1))

#: ``--data`` names: the built-in Pima table, and the shared churn table (5,000 rows, target ``churn``).
DATASETS = {"diabetes": ("diabetes", None), "churn": (str(ROOT.parent / "shared" / "datasets" / "churn.csv"), "churn")}


def load_split(name: str = "diabetes") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A table's rows preprocessed as the search sees them: 80/20 stratified holdout."""
    from automl.data import load
    from automl.evaluation import holdout_split
    from automl.preprocess import encode_target, infer_schema, make_preprocessor

    ds = load(*DATASETS[name])
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    train, val = holdout_split(y, schema.task, 0.2, seed=1)
    pre = make_preprocessor(schema).fit(x.iloc[train])
    return (pre.transform(x.iloc[train]).astype("float32"), y[train],
            pre.transform(x.iloc[val]).astype("float32"), y[val])


def one_trial(params: dict[str, Any], data: tuple[np.ndarray, ...], seed: int) -> dict[str, float]:
    """Train one network for exactly ``EPOCHS`` epochs; time it and count validations."""
    import keras
    from sklearn.metrics import roc_auc_score

    from automl.training import KerasNetwork

    x, y, x_val, y_val = data
    epochs_seen: list[int] = []
    start = time.perf_counter()
    net = KerasNetwork(params, "binary", epochs=EPOCHS, seed=seed)
    try:
        net.fit(x, y, x_val, monitor=lambda proba: float(roc_auc_score(y_val, proba[:, 1])),
                report=lambda score, epoch: epochs_seen.append(epoch))
        auc = float(roc_auc_score(y_val, net.predict_proba(x_val)[:, 1]))
    finally:
        keras.backend.clear_session(free_memory=False)
    seconds = time.perf_counter() - start
    if not epochs_seen or epochs_seen[-1] != EPOCHS:
        raise RuntimeError(f"trial stopped at epoch {epochs_seen[-1:]}, not {EPOCHS}: early stopping is on")
    return {"seconds": seconds, "val_auc": auc, "last_auc": net.history_[-1][1],
            "best_epoch": net.best_epoch_, "validations": len(epochs_seen)}


def measure(params: dict[str, Any], chunk: int, data: tuple[np.ndarray, ...], trials: int) -> dict[str, Any]:
    """``trials`` timed trials after one warm-up trial, with ``EPOCH_CHUNK = chunk``."""
    from automl import training

    training.EPOCH_CHUNK = chunk
    training.PATIENCE_CHUNKS = 10**9  # never stop early: every trial runs all epochs
    runs = []
    for i in range(trials + 1):
        run = one_trial(params, data, seed=i)
        log(f"batch {params['batch_size']:>3} chunk {chunk}: trial {i}{' (warm-up)' if i == 0 else ''} "
            f"{run['seconds']:.2f}s auc {run['val_auc']:.4f}")
        runs.append(run)
    timed = runs[1:]
    median_s = statistics.median(r["seconds"] for r in timed)
    return {"batch_size": params["batch_size"], "epoch_chunk": chunk, "validations": int(timed[0]["validations"]),
            "median_s": round(median_s, 3), "min_s": round(min(r["seconds"] for r in timed), 3),
            "max_s": round(max(r["seconds"] for r in timed), 3), "warmup_s": round(runs[0]["seconds"], 3),
            "trials_per_min": round(60.0 / median_s, 1),
            "val_auc_median": round(statistics.median(r["val_auc"] for r in timed), 4),
            "val_auc_at_epoch_100_median": round(statistics.median(r["last_auc"] for r in timed), 4),
            "best_epoch_median": statistics.median(r["best_epoch"] for r in timed)}


def population_speed(size: int, batch: int, data: tuple[np.ndarray, ...], start: int = 0) -> dict[str, Any]:
    """``size`` copies of warm start ``start`` (seeds 0..size-1) trained as one population, 100 epochs each.

    Timed from building to the last validation (trace included), so trials/min is what a search
    round would get; early stopping is off, validation every ``EPOCH_CHUNK`` (5) epochs.
    """
    from sklearn.metrics import roc_auc_score

    from automl import training
    from automl.population import PopulationMLP
    from automl.spaces import MLP_WARM_STARTS

    training.EPOCH_CHUNK, training.PATIENCE_CHUNKS = 5, 10**9
    x, y, x_val, y_val = data
    members = [{**MLP_WARM_STARTS[start], "batch_size": batch}] * size
    start = time.perf_counter()
    results = PopulationMLP(members, list(range(size)), "binary", epochs=EPOCHS).fit(
        x, y, x_val, monitor=lambda proba: float(roc_auc_score(y_val, proba[:, 1])))
    seconds = time.perf_counter() - start
    if any(r.epochs != EPOCHS for r in results):
        raise RuntimeError("a member stopped before 100 epochs")
    log(f"population {size:>3} batch {batch:>3}: {seconds:.2f}s, {60 * size / seconds:.0f} trials/min")
    return {"population": size, "batch_size": batch, "seconds": round(seconds, 2),
            "trials_per_min": round(60 * size / seconds, 1),
            "best_val_auc_median": round(float(np.median([r.score for r in results])), 4)}


def packed_speed(members: int, batch: int, data: tuple[np.ndarray, ...], start: int = 0) -> dict[str, Any]:
    """One packed ensemble of ``members`` copies of warm start ``start`` trained 100 epochs (validation every 5,
    early stopping off): seconds from building to the last validation, members per minute, validation AUC of the
    members' mean."""
    from sklearn.metrics import roc_auc_score

    from automl import training
    from automl.spaces import MLP_WARM_STARTS

    training.PATIENCE_CHUNKS = 10**9
    x, y, x_val, y_val = data
    net = training.KerasNetwork({**MLP_WARM_STARTS[start], "batch_size": batch, "ensemble_size": members}, "binary",
                                epochs=EPOCHS, seed=0)
    started = time.perf_counter()
    net.fit(x, y, x_val, monitor=lambda proba: float(roc_auc_score(y_val, proba[:, 1])))
    seconds = time.perf_counter() - started
    log(f"packed {members:>3} batch {batch:>3}: {seconds:.2f}s, {60 * members / seconds:.0f} members/min")
    return {"ensemble_size": members, "batch_size": batch, "seconds": round(seconds, 2),
            "members_per_min": round(60 * members / seconds, 1),
            "best_val_auc": round(max(score for _, score in net.history_), 4)}


def deadline_overrun() -> dict[str, Any]:
    """Seconds past its deadline that a CNN fit returns, when one epoch costs more than the time left."""
    import keras

    from automl import training
    from automl.spaces import CNN_WARM_STARTS

    rng = np.random.default_rng(0)
    x, y = rng.random((DEADLINE_IMAGES, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, DEADLINE_IMAGES)
    params = CNN_WARM_STARTS[0]

    def fit(deadline: float) -> tuple[training.KerasNetwork, float]:
        net = training.KerasNetwork(params, "image", epochs=EPOCHS, seed=0, n_classes=10, family="cnn")
        started = time.monotonic()
        try:
            net.fit(x, y, deadline=deadline)
        finally:
            keras.backend.clear_session(free_memory=False)
        return net, time.monotonic() - started

    _, setup_s = fit(deadline=0.0)  # building, tracing and one step: the part no deadline can cut
    deadline = time.monotonic() + DEADLINE_SECONDS
    net, fit_s = fit(deadline)
    overrun = fit_s - DEADLINE_SECONDS
    steps_per_epoch = -(-DEADLINE_IMAGES // params["batch_size"])
    seconds_per_step = (fit_s - setup_s) / max(net.n_steps_ - 1, 1)
    log(f"deadline: {net.n_steps_} steps in {fit_s:.1f}s, {overrun:+.2f}s past the deadline")
    return {"bench": "trial_speed", "case": "deadline_overrun", "images": DEADLINE_IMAGES,
            "image_shape": [28, 28, 1], "params": params, "time_left_s": DEADLINE_SECONDS,
            "seconds_past_deadline": round(overrun, 2), "fit_s": round(fit_s, 2), "cut_short": net.cut_short_,
            "steps": net.n_steps_, "steps_per_epoch": steps_per_epoch, "setup_s": round(setup_s, 2),
            "seconds_per_step": round(seconds_per_step, 4),
            "epoch_s_estimate": round(seconds_per_step * steps_per_epoch, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def cnn_epoch_seconds(batch: int, stored: bool = False) -> float:
    """Seconds per epoch of the default CNN on CNN_IMAGES random 28x28 images at ``batch``, in this process: a fit
    of CNN_EPOCHS + 1 epochs less a fit of 1 (building and tracing cancel out); ``stored``: read from disk."""
    import tempfile

    from automl import training
    from automl.image_store import ImageRows
    from automl.spaces import CNN_WARM_STARTS

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (CNN_IMAGES, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, CNN_IMAGES)
    if stored:
        file = Path(tempfile.mkdtemp(prefix="trial-speed-")) / "pixels.npy"
        np.save(file, x)
        x = ImageRows(file).scaled(255.0)
    else:
        x = x.astype(np.float32) / 255
    params = {**CNN_WARM_STARTS[0], "batch_size": batch, "tta": False}

    def fit(epochs: int) -> float:
        started = time.perf_counter()
        training.KerasNetwork(params, "image", epochs=epochs, seed=0, n_classes=10, family="cnn").fit(x, y)
        return time.perf_counter() - started

    return (fit(CNN_EPOCHS + 1) - fit(1)) / CNN_EPOCHS


def cnn_speed(feeds: tuple[str, ...] = ("memory",)) -> dict[str, Any]:
    """Every CNN setting, each in fresh processes started together."""
    import subprocess

    rows = []
    for processes, threads in CNN_SETTINGS:
        for batch in BATCH_SIZES:
            for feed in feeds:
                env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
                       "OMP_NUM_THREADS": str(threads)}
                command = [sys.executable, __file__, "--cnn-epoch", str(batch)] + ["--stored"] * (feed == "stored")
                running = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
                           for _ in range(processes)]
                seconds = [float(proc.communicate()[0].strip().splitlines()[-1]) for proc in running]
                per_epoch = statistics.median(seconds)
                rows.append({"processes": processes, "threads": threads, "batch_size": batch, "feed": feed,
                             "seconds_per_epoch": round(per_epoch, 2),
                             "images_per_s_total": round(sum(CNN_IMAGES / s for s in seconds))})
                log(f"cnn {processes}x{threads} batch {batch} {feed}: {per_epoch:.2f}s/epoch, "
                    f"{rows[-1]['images_per_s_total']} images/s in all")
    return {"bench": "trial_speed", "case": "cnn", "date": dt.datetime.now().isoformat(timespec="seconds"),
            "images": CNN_IMAGES, "image_shape": [28, 28, 1], "epochs_timed": CNN_EPOCHS, "results": rows,
            "cpu_count": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="timed trials per setting, after one warm-up (5)")
    parser.add_argument("--quick", action="store_true", help="2 timed trials per setting")
    parser.add_argument("--population", help="population sizes to time instead, e.g. 1,8,32,128")
    parser.add_argument("--data", default="diabetes,churn", help="tables for --population (diabetes,churn)")
    parser.add_argument("--start", type=int, default=0, help="the MLP warm start --population times (0)")
    parser.add_argument("--packed", help="packed ensemble sizes to time instead, e.g. 1,8,32")
    parser.add_argument("--cnn", action="store_true", help="time the default CNN per processes x threads instead")
    parser.add_argument("--stored", action="store_true", help="with --cnn: also time images streamed from disk")
    parser.add_argument("--cnn-epoch", type=int, help=argparse.SUPPRESS)  # one process of --cnn, at this batch
    args = parser.parse_args(argv)
    if args.cnn_epoch:
        print(cnn_epoch_seconds(args.cnn_epoch, args.stored))
        return 0
    if args.cnn:
        print(json.dumps(cnn_speed(("memory", "stored") if args.stored else ("memory",))))
        return 0
    if args.packed:
        for name in args.data.split(","):
            data = load_split(name)
            packed_speed(1, 32, data, args.start)  # a warm-up: TensorFlow's first graph
            rows = [packed_speed(int(k), batch, data, args.start) for batch in BATCH_SIZES
                    for k in args.packed.split(",")]
            print(json.dumps({"bench": "trial_speed", "case": "packed", "dataset": name, "start": args.start,
                              "date": dt.datetime.now().isoformat(timespec="seconds"), "epochs": EPOCHS,
                              "rows_train": len(data[0]), "features": data[0].shape[1], "results": rows,
                              "loadavg_1m": round(os.getloadavg()[0], 2)}))
        return 0
    if args.population:
        sizes = [int(v) for v in args.population.split(",")]
        for name in args.data.split(","):
            data = load_split(name)
            rows = [population_speed(size, batch, data, args.start) for batch in BATCH_SIZES for size in sizes]
            print(json.dumps({"bench": "trial_speed", "case": "population", "dataset": name, "start": args.start,
                              "date": dt.datetime.now().isoformat(timespec="seconds"), "epochs": EPOCHS,
                              "rows_train": len(data[0]), "features": data[0].shape[1], "results": rows,
                              "loadavg_1m": round(os.getloadavg()[0], 2)}))
        return 0
    trials = 2 if args.quick else args.trials
    if trials < 1:
        parser.error("--trials must be at least 1")

    import tensorflow as tf

    from automl.spaces import MLP_WARM_STARTS

    data = load_split()
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = [measure({**MLP_WARM_STARTS[0], "batch_size": batch}, chunk, data, trials)
               for batch in BATCH_SIZES for chunk in EPOCH_CHUNKS]
    print(json.dumps({
        "bench": "trial_speed", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "dataset": "diabetes", "rows_train": len(data[0]), "rows_val": len(data[2]), "features": data[0].shape[1],
        "epochs": EPOCHS, "trials": trials, "warmup_excluded": 1, "params": MLP_WARM_STARTS[0],
        "results": results, "bench_s": round(time.perf_counter() - start, 1),
        "machine": {"cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                    "keras": importlib.metadata.version("keras"), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_1m_before": round(load_before[0], 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
    }))
    print(json.dumps(deadline_overrun()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
