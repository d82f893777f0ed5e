"""Search engines compared at an equal budget, and CNN trial speed on digits: one JSON line.

Each search runs alone in this process for ``--seconds`` on a table's search split (80/20
stratified holdout, as ``bench/trial_speed.py`` makes it): Optuna TPE + Hyperband with
populations (the default: members per round chosen from the rows and the budget),
Optuna one trial at a time (``--population 1``), and Keras Tuner's hyperband, bayesian and
random tuners. For each we record the best validation AUC against the seconds since the
search started (from the engines' own progress lines, so trials trained together count
when they are told). Then CNN trials on digits: median seconds per trial of the warm-start
CNN at 20 and 100 epochs.

    python bench/engines.py                                 # diabetes and churn, ~12 minutes
    python bench/engines.py --seconds 30 --quick --data diabetes
    python bench/engines.py --quick --no-cnn --seeds 1,2,3  # each search thrice; mean_best averages
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import log  # noqa: F401  (sets up sys.path first)
from trial_speed import load_split

#: (label, options of RunConfig) for each search compared.
SEARCHES = {"optuna-population": {"engine": "optuna", "population": None},  # --population auto
            "optuna-one-at-a-time": {"engine": "optuna", "population": 1},
            "keras-tuner/hyperband": {"engine": "keras-tuner", "tuner": "hyperband"},
            "keras-tuner/bayesian": {"engine": "keras-tuner", "tuner": "bayesian"},
            "keras-tuner/random": {"engine": "keras-tuner", "tuner": "random"}}
QUICK = ("optuna-population", "optuna-one-at-a-time")


def _engine_run(label: str, name: str, split: tuple, seconds: float, folder: str, seed: int = 1) -> dict[str, Any]:
    from automl.budget import Budget
    from automl.config import RunConfig
    from automl.engines import SearchData, SearchJob, StopPolicy, get_engine
    from automl.events import EventLog
    from automl.metrics import get
    from automl.spaces import FAMILIES, MAX_EPOCHS

    options = SEARCHES[label]
    config = RunConfig.from_options(workers=1, seed=seed, **options)
    space, warm_starts = FAMILIES["mlp"]  # as automl.search.search_job does
    # The search alone gets the whole budget: nothing is kept back for refits or export.
    job = SearchJob(config, space, warm_starts, get("auc", "binary"), "bench", Path(folder) / label,
                    MAX_EPOCHS, StopPolicy(0.0, 0.0, 0.0), {"bench": label})
    data = SearchData(*split, task="binary", n_classes=2)
    events, curve = EventLog(verbose=False), []
    start = time.monotonic()

    def on_event(row: dict[str, str]) -> None:
        found = re.search(r", best ([0-9.]+)", row["message"])
        if found and (not curve or float(found.group(1)) > curve[-1][1]):
            curve.append([round(time.monotonic() - start, 1), float(found.group(1))])

    events.subscribe(on_event)
    trials = get_engine(options["engine"]).search(job, data, Budget(seconds), events)
    elapsed = time.monotonic() - start
    complete = [t for t in trials if t.state == "COMPLETE"]
    return {"search": label, "dataset": name, "seed": seed, "search_s": round(elapsed, 1), "trials": len(trials),
            "complete": len(complete), "best_val_auc": round(max((t.value for t in complete), default=float("nan")), 4),
            "best_at_30s": _best_at(curve, 30.0), "best_at_60s": _best_at(curve, 60.0),
            "best_over_time": [[t, round(v, 4)] for t, v in curve]}


def _mean_best(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Each search's best validation AUC averaged over the seeds, per dataset: one seed's best on a
    154-row validation split is mostly noise."""
    groups: dict[str, list[float]] = {}
    for run in runs:
        groups.setdefault(f"{run['dataset']}/{run['search']}", []).append(run["best_val_auc"])
    return {key: round(statistics.mean(values), 4) for key, values in groups.items()}


def _best_at(curve: list[list[float]], second: float) -> float | None:
    reached = [value for at, value in curve if at <= second]
    return round(reached[-1], 4) if reached else None


def _cnn_speed(epochs: int, trials: int) -> dict:
    from automl import data
    from automl.engines import SearchData
    from automl.engines.trainers import train_trial
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
    p.add_argument("--seconds", type=float, default=60.0, help="search budget per search")
    p.add_argument("--data", default="diabetes,churn", help="tables, comma-separated (diabetes, churn)")
    p.add_argument("--quick", action="store_true", help="Optuna with and without populations only; 1 CNN trial")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN trial timing on digits")
    p.add_argument("--seeds", default="1", help="search seeds, comma-separated: each search runs once per seed "
                                                "(its sampler and networks), and `mean_best` averages them")
    args = p.parse_args()
    import keras  # noqa: F401  - import cost outside the timed searches

    labels = QUICK if args.quick else tuple(SEARCHES)
    runs = []
    with tempfile.TemporaryDirectory(prefix="automl-engines-") as folder:
        for name in args.data.split(","):
            split = load_split(name)
            for seed in (int(s) for s in args.seeds.split(",")):
                for label in labels:
                    log(f"{name}: {label}, seed {seed} ...")
                    runs.append(_engine_run(label, name, split, args.seconds, f"{folder}/{name}-{seed}", seed))
                    log(json.dumps({k: v for k, v in runs[-1].items() if k != "best_over_time"}))
    n = 1 if args.quick else 3
    cnn = [] if args.no_cnn else [_cnn_speed(epochs, n) for epochs in (20, 100)]
    log(str(cnn))
    print(json.dumps({"bench": "engines", "seconds_per_search": args.seconds, "searches": runs,
                      "mean_best": _mean_best(runs), "cnn_digits": cnn,
                      "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
