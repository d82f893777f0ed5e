"""Champion/challenger bookkeeping: a fixed holdout, the promotion rule, the project's history.

A project folder holds ``champion/`` (a model folder the predict CLI accepts, plus
``champion.json``), ``leaderboard_history.csv`` (append-only, one row per run) and
``challengers/<run-id>/``. :func:`project_lock` serialises the compare-promote-record
step of concurrent runs. ``flows/retrain.py`` runs these as Prefect tasks. Only a missing
``champion/`` folder lets a challenger in unchallenged: a champion that exists but does
not load raises :class:`ChampionUnreadable`, and nothing replaces it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.data import Dataset
from automl.errors import AutoMLError, InputError
from automl.io import atomic_dir, atomic_write_text, write_csv
from automl.preprocess import infer_schema

__all__ = ["Decision", "ChampionUnreadable", "load_champion", "holdout_mask", "split_holdout", "compare",
           "project_lock", "append_history", "promote", "prune_challengers", "HISTORY_FILE", "HISTORY_COLUMNS",
           "PROFILE_FILE"]

#: One row in this many belongs to the fixed holdout.
HOLDOUT_BUCKETS = 5
#: Fewer holdout rows than this cannot tell two models apart.
MIN_HOLDOUT_ROWS = 20
#: Each class needs this many holdout rows for a stratified bootstrap.
MIN_HOLDOUT_PER_CLASS = 2
HISTORY_FILE = "leaderboard_history.csv"
#: In ``champion/``: the champion's training rows and holdout predictions as :class:`automl.drift.Profile` JSON,
#: what scoring and retraining runs compare new rows with.
PROFILE_FILE = "drift_profile.json"
HISTORY_COLUMNS = ["run_id", "time", "project", "dataset_fingerprint", "metric", "challenger", "champion_before",
                   "challenger_cv", "challenger_holdout", "champion_holdout", "gain", "ci_low", "ci_high", "margin",
                   "holdout_rows", "promoted", "reason", "rows", "source", "drift"]


# -- the fixed holdout ------------------------------------------------------------------
def holdout_mask(frame: pd.DataFrame, images: np.ndarray | None = None) -> np.ndarray:
    """True for the rows of the fixed holdout: one row in five, chosen by a hash of the row's content.

    The same row always lands on the same side, whatever the other rows, the row order
    or the column order, and whether a number is stored as an integer or a float: so a
    champion trained earlier never saw a row of today's holdout. For image data the
    pixels of each image count as part of its row.
    """
    ordered = frame[sorted(frame.columns, key=str)]
    canonical = pd.DataFrame({
        col: ordered[col].astype("float64") if pd.api.types.is_numeric_dtype(ordered[col])
        else ordered[col].astype("string")
        for col in ordered.columns})
    hashes = pd.util.hash_pandas_object(canonical, index=False).to_numpy()
    if images is not None:
        pixels = np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=8)
                                          .digest(), "little") for img in images], dtype="uint64")
        hashes = pd.util.hash_pandas_object(pd.DataFrame({"row": hashes, "pixels": pixels}), index=False).to_numpy()
    return hashes % HOLDOUT_BUCKETS == 0


def _subset(ds: Dataset, rows: np.ndarray, source: str) -> Dataset:
    images = getattr(ds, "images", None)
    extra = {} if images is None else {"images": images[rows]}
    fingerprint = hashlib.sha256(f"{ds.fingerprint}:{source}".encode()).hexdigest()[:16]
    return Dataset(ds.frame.iloc[rows].reset_index(drop=True), ds.card, f"{ds.source} ({source})", fingerprint,
                   provenance=ds.provenance, **extra)


def split_holdout(ds: Dataset) -> tuple[Dataset, Dataset]:
    """The training rows and the fixed holdout rows of ``ds`` (rows with a target), as datasets with its card."""
    labelled = np.flatnonzero(ds.frame[ds.target].notna().to_numpy())
    images = getattr(ds, "images", None)
    mask = holdout_mask(ds.frame.iloc[labelled], None if images is None else images[labelled])
    training, holdout = _subset(ds, labelled[~mask], "training rows"), _subset(ds, labelled[mask], "holdout rows")
    if len(holdout.frame) < MIN_HOLDOUT_ROWS:
        raise InputError(f"{ds.source}: only {len(holdout.frame)} of {len(labelled)} rows fall into the fixed holdout "
                         f"(1 row in {HOLDOUT_BUCKETS}); retraining needs at least {MIN_HOLDOUT_ROWS} to compare "
                         "models: add rows or use automl.run instead")
    if infer_schema(ds).task != "regression":
        counts = holdout.frame[ds.target].value_counts()
        for label in ds.frame[ds.target].dropna().unique():
            if counts.get(label, 0) < MIN_HOLDOUT_PER_CLASS:
                raise InputError(f"{ds.source}: class {label!r} of {ds.target!r} has {counts.get(label, 0)} rows "
                                 f"in the fixed holdout, fewer than {MIN_HOLDOUT_PER_CLASS}; add rows of that class")
    return training, holdout


# -- comparing and promoting ------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """The outcome of one champion/challenger comparison; ``gain`` > 0 means the challenger is better."""

    promoted: bool
    reason: str
    metric: str
    challenger_score: float
    champion_score: float | None = None
    gain: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    holdout_rows: int = 0


def compare(challenger: Any, champion: Any | None, holdout: Dataset, metric_name: str,
            margin: float | None = None, seed: int = 0) -> Decision:
    """Score both models on the ``holdout`` rows with ``metric_name`` and apply the promotion rule.

    The rule: no champion → promote. Otherwise, with ``margin`` None, promote when the
    lower end of the 95 % bootstrap interval of the paired gain is above 0 (better by
    more than noise); with a ``margin``, promote when the gain itself exceeds it.
    Models are :class:`automl.bagging.Model` objects (``schema`` and ``predict_proba``).
    """
    from automl.metrics import get
    from automl.preprocess import encode_target
    from automl.stats import Bootstrap

    schema = challenger.schema
    rows = np.arange(len(holdout.frame))
    if schema.task != "regression":  # a class the challenger never saw cannot be scored
        rows = np.flatnonzero(holdout.frame[schema.target].isin(schema.classes).to_numpy())
    frame = holdout.frame.iloc[rows]
    images = getattr(holdout, "images", None)
    x = frame.drop(columns=[schema.target]) if images is None else images[rows]
    y = encode_target(schema, frame[schema.target])
    metric = get(metric_name, schema.task)
    pred_challenger = challenger.predict_proba(x)
    score = float(metric.fn(y, pred_challenger))
    n = len(rows)
    if champion is None:
        return Decision(True, "first run: no champion yet", metric.name, score, holdout_rows=n)
    problem = _incompatible(champion.schema, schema, frame)
    if problem:
        return Decision(True, f"the champion cannot score this data ({problem}); the challenger replaces it",
                        metric.name, score, holdout_rows=n)
    pred_champion = champion.predict_proba(x)
    champion_score = float(metric.fn(y, pred_champion))
    # "+ 0.0" turns a negative zero (sign -1 times no difference) into 0.0 for the CSV and the UI.
    gain = metric.sign() * (score - champion_score) + 0.0
    low, high = (v + 0.0 for v in Bootstrap(y, schema.task, seed=seed).difference(metric, pred_challenger,
                                                                                  pred_champion))
    interval = f"95% CI of the {metric.name} gain [{low:+.4f}, {high:+.4f}]"
    if margin is None:
        promoted = low > 0
        reason = (f"better by more than noise: {interval} is above 0" if promoted
                  else f"not better by more than noise: {interval} reaches 0 or below")
    else:
        promoted = gain > margin
        reason = f"{metric.name} gain {gain:+.4f} {'>' if promoted else '<='} margin {margin:+.4f} ({interval})"
    return Decision(promoted, reason, metric.name, score, champion_score, gain, low, high, n)


def _incompatible(theirs: Any, ours: Any, frame: pd.DataFrame) -> str:
    """Why a champion with schema ``theirs`` cannot be compared on this data ('' if it can)."""
    if theirs.task != ours.task or theirs.target != ours.target:
        return f"it predicts {theirs.target!r} ({theirs.task}), not {ours.target!r} ({ours.task})"
    if list(theirs.classes) != list(ours.classes):
        return f"its classes {theirs.classes} differ from {ours.classes}"
    shapes = getattr(theirs, "image_shape", None), getattr(ours, "image_shape", None)
    if shapes[0] != shapes[1]:
        return f"it takes images of {shapes[0]}, not {shapes[1]}"
    missing = [c for c in theirs.features if c not in frame.columns]
    return f"the data lacks its column(s) {missing}" if missing else ""


@contextmanager
def project_lock(project_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the project (``.lock``): one run at a time compares, promotes and writes history."""
    project_dir.mkdir(parents=True, exist_ok=True)
    with (project_dir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks until the other run is done; released when the file closes
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_history(project_dir: Path, row: dict[str, Any]) -> None:
    """Add one row to ``leaderboard_history.csv``, rewriting it atomically. Hold :func:`project_lock`."""
    path = project_dir / HISTORY_FILE
    new = pd.DataFrame([row]).reindex(columns=HISTORY_COLUMNS)
    if path.exists():
        new = pd.concat([pd.read_csv(path), new], ignore_index=True)
    write_csv(new, path)


def promote(leader_dir: Path, champion_dir: Path, info: dict[str, Any], files: dict[str, str] | None = None) -> None:
    """Replace ``champion_dir`` whole with a copy of ``leader_dir`` plus ``champion.json`` and ``files`` (name ->
    text, e.g. the training rows' drift profile). Hold the lock."""
    with atomic_dir(champion_dir) as tmp:
        shutil.copytree(leader_dir, tmp, dirs_exist_ok=True)
        atomic_write_text(tmp / "champion.json", json.dumps(info, indent=1, default=str))
        for name, text in (files or {}).items():
            atomic_write_text(tmp / name, text)


class ChampionUnreadable(AutoMLError):
    """The champion folder exists but cannot be read: it must be repaired or removed by a person."""


def load_champion(champion_dir: Path) -> tuple[Any | None, dict[str, Any]]:
    """The champion model and its ``champion.json`` (``{}`` for a model folder placed there by hand).

    ``(None, {})`` only when there is no ``champion_dir``. Any other failure raises
    :class:`ChampionUnreadable`: a champion must never be replaced without a comparison
    because a file of it is damaged.
    """
    if not champion_dir.exists():
        return None, {}
    from automl.export import load_model

    info_path = champion_dir / "champion.json"
    try:
        return load_model(champion_dir), json.loads(info_path.read_text()) if info_path.exists() else {}
    except Exception as exc:  # whatever is damaged, the answer is the same: stop and tell a person
        raise ChampionUnreadable(f"champion in {champion_dir} does not load ({type(exc).__name__}: {exc}); "
                                 "restore it, or remove the folder to let the next run promote its challenger"
                                 ) from exc


def prune_challengers(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` finished challenger folders (run ids sort by time)."""
    finished = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "decision.json").is_file())
    for old in finished[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return [p.name for p in finished[:-keep]]
