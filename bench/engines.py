"""Engines compared at an equal budget, and CNN trial speed on digits: one JSON line.

For each engine (Optuna TPE + Hyperband pruning; Keras Tuner hyperband, bayesian,
random) the search stage runs alone on diabetes for ``--seconds`` in one process, and
we record the best validation AUC reached after each finished trial (best score
against elapsed time). Then CNN trials on digits: median seconds per trial of the
warm-start CNN at 20 and 100 epochs.

    python bench/engines.py                  # ~5 minutes
    python bench/engines.py --seconds 30 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import log  # noqa: F401  (sets up sys.path first)


def _engine_run(engine: str, tuner: str, seconds: float, folder: str) -> dict:
    from automl import AutoML
    from automl.budget import Budget
    from automl.engines import get_engine
    from automl.events import EventLog
    from automl.spaces import MAX_EPOCHS, MLP_SPACE, MLP_WARM_STARTS

    aml = AutoML(workers=1, verbose=False)
    aml.ingest("diabetes")
    aml.prepare()
    data = aml.search_data()
    import keras  # noqa: F401  - import cost outside the timed search

    options = {"tuner": tuner} if engine == "keras-tuner" else {}
    start = time.monotonic()
    # The search alone gets the whole budget: nothing is kept back for refits or export.
    trials = get_engine(engine).search(
        MLP_SPACE, data, aml.metric, Budget(seconds), max_trials=None, seed=1,
        storage_dir=Path(folder) / f"{engine}-{tuner}", study_name="bench", warm_starts=MLP_WARM_STARTS,
        refit_trials=0, finish_seconds=0.0, keep_share=0.0, events=EventLog(verbose=False), max_epochs=MAX_EPOCHS,
        **options)
    elapsed = time.monotonic() - start
    done = sorted((t for t in trials if t.state == "COMPLETE"), key=lambda t: t.number)
    best, curve, clock = float("-inf"), [], 0.0
    for t in sorted(trials, key=lambda t: t.number):
        clock += t.duration_s if t.duration_s == t.duration_s else 0.0  # NaN-safe
        if t.state == "COMPLETE" and t.value > best:
            best = t.value
            curve.append([round(clock, 1), round(best, 4)])
    return {"engine": engine if engine == "optuna" else f"keras-tuner/{tuner}", "search_s": round(elapsed, 1),
            "trials": len(trials), "complete": len(done), "best_val_auc": round(best, 4),
            "best_over_time": curve}


def _cnn_speed(epochs: int, trials: int) -> dict:
    from automl import data
    from automl.engines import SearchData, train_trial
    from automl.evaluation import holdout_split
    from automl.metrics import get
    from automl.preprocess import encode_target, infer_schema, make_preprocessor
    from automl.spaces import CNN_WARM_STARTS

    ds = data.load("digits")
    schema = infer_schema(ds)
    y = encode_target(schema, ds.frame[ds.target])
    train, val = holdout_split(y, "image", 0.2, seed=0)
    pre = make_preprocessor(schema).fit(ds.images[train])
    split = SearchData(pre.transform(ds.images[train]), y[train], pre.transform(ds.images[val]), y[val], "image",
                       10, "cnn")
    metric = get("accuracy", "image")
    times, scores = [], []
    for i in range(trials + 1):  # the first trial pays for tracing: excluded
        start = time.monotonic()
        value, _ = train_trial(dict(CNN_WARM_STARTS[0]), split, metric, i, None, None, epochs)
        if i:
            times.append(time.monotonic() - start)
            scores.append(value)
    return {"epochs": epochs, "median_s": round(statistics.median(times), 2), "trials": trials,
            "val_accuracy_median": round(statistics.median(scores), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="search budget per engine")
    p.add_argument("--quick", action="store_true", help="Optuna and Keras Tuner hyperband only; 1 CNN trial")
    args = p.parse_args()
    runs = [("optuna", "hyperband"), ("keras-tuner", "hyperband")]
    if not args.quick:
        runs += [("keras-tuner", "bayesian"), ("keras-tuner", "random")]
    with tempfile.TemporaryDirectory(prefix="automl-engines-") as folder:
        engines = []
        for engine, tuner in runs:
            log(f"{engine} {tuner} ...")
            engines.append(_engine_run(engine, tuner, args.seconds, folder))
            log(str(engines[-1]))
    n = 1 if args.quick else 3
    cnn = [_cnn_speed(epochs, n) for epochs in (20, 100)]
    log(str(cnn))
    print(json.dumps({"bench": "engines", "dataset": "diabetes", "seconds_per_engine": args.seconds,
                      "engines": engines, "cnn_digits": cnn, "cpus": os.cpu_count(),
                      "loadavg_1m": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
