"""Ingest: dataset cards, loading them or the user's source (a file, a folder, a glob pattern or a query, read by
:mod:`automl.sources` and :mod:`automl.tables`), and validating the table once at the boundary.

Every problem with the user's input becomes an :class:`InputError` whose one-line
message names the file, column or value and says what to do.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.config import cards_dir
from automl.errors import InputError
from automl.image_store import ImageRows, in_batches
from automl.images import IMAGE_SUFFIXES, is_image_source, load_images
from automl.sources import (
    TABLE_SUFFIXES,
    Source,
    as_source,
    describe,
    fingerprint,
    is_table_file,
    newest_rows,
    provenance,
    read,
)
from automl.tables import check_unique_names, compact, path_exists, read_table

__all__ = ["DatasetCard", "Dataset", "cards_dir", "builtin_cards", "load", "load_rows", "from_frame", "read_table",
           "compact", "distinct_counts", "validate", "TASKS", "MAX_CLASSES"]

TASKS = ("binary", "multiclass", "regression", "image")
#: A text column whose values parse as numbers this often is a numeric column with typos.
_NUMERIC_SHARE = 0.95
#: A classification target has at most this many classes, and two rows per class on average;
#: beyond that it is an identifier or a number to regress on.
MAX_CLASSES = 1000


@dataclass(frozen=True)
class DatasetCard:
    """What we know about a dataset: where it is, what to predict, and column rules."""

    name: str
    target: str | None = None
    task: str | None = None
    file: str | None = None
    loader: str | None = None
    loader_kwargs: dict[str, Any] = field(default_factory=dict)
    zero_means_missing: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    title: str = ""
    question: str = ""
    license: str = ""
    provenance: str = ""

    @classmethod
    def from_yaml(cls, path: Path) -> DatasetCard:
        import yaml

        raw = yaml.safe_load(path.read_text()) or {}
        cols = raw.pop("columns", {}) or {}
        return cls(**raw, zero_means_missing=tuple(cols.get("zero_means_missing") or ()),
                   drop=tuple(cols.get("drop") or ()))


@dataclass
class Dataset:
    """A loaded, validated table with its card and a fingerprint of content + card."""

    frame: pd.DataFrame
    card: DatasetCard
    source: str
    fingerprint: str
    #: For image data: the pixels, shape (n, height, width, channels); ``frame`` holds the labels.
    images: np.ndarray | ImageRows | None = None
    #: What was read, as plain JSON (``run.json``'s ``source``, the champion's history): see
    #: :func:`automl.sources.provenance`.
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        assert self.card.target is not None
        return self.card.target

    def read_line(self) -> str:
        """What was read, in one line (files and rows, or the query and its database), for logs and history."""
        return describe(self.provenance) if self.provenance else self.source


def builtin_cards() -> dict[str, DatasetCard]:
    """Built-in dataset cards by name."""
    cards = (DatasetCard.from_yaml(p) for p in sorted(cards_dir().glob("*.yaml")))
    return {c.name: c for c in cards}


def load(name_or_path: str | Source, target: str | None = None, task: str | None = None) -> Dataset:
    """Load a built-in dataset by name, or a file, folder, glob pattern or query (a :class:`Source`, or the dataset
    argument alone) with ``target``; validate it.

    The last result is kept for this process: the CLI checks the data before the flow's ingest task loads it
    again, and a large source should be read once. A source changed since (:func:`automl.sources.fingerprint`:
    the files' sizes and modification times, a query's checksum) is read again; a query on a database other than
    PostgreSQL, which has no checksum, every time.
    """
    source = as_source(name_or_path)
    version = fingerprint(source)
    if version is None and source.kind == "sql":
        return _load(source, target, task, None)
    try:  # a folder of images has no fingerprint: its own modification time changes when a file is added
        stat = os.stat(source.location)
        changed: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        changed = None
    key = (source, target, task, version, changed)
    if _LAST_LOAD.get("key") != key:
        _LAST_LOAD.clear()
        _LAST_LOAD.update(key=key, dataset=_load(source, target, task, version))
    return _LAST_LOAD["dataset"]


#: ``load``'s one-entry memo: {"key": (source, target, task, fingerprint, stat), "dataset": Dataset}.
_LAST_LOAD: dict[str, Any] = {}


def _load(source: Source, target: str | None, task: str | None, version: str | None) -> Dataset:
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    card = builtin_cards().get(source.location)
    path = Path(source.location)
    # Before any other look-up: a path too long fails here.
    found = card is None and source.kind != "sql" and path_exists(path)
    if card is not None and card.task == "image":
        return _with_provenance(_image_dataset(card, *_load_builtin_images(card)), "builtin", card.name)
    if card is None and _holds_images(source, path):
        if task not in (None, "image"):
            raise InputError(f"{path}: image data, but --task {task}; drop --task or use --task image")
        x, y, _ = load_images(path)
        ds = _image_dataset(DatasetCard(name=_slug(path.stem), target="label", task="image"), x, y, str(path))
        return _with_provenance(ds, source.kind, str(path), [path] if path.is_file() else [])
    if card is None and source.kind == "file" and path.suffix.lower() not in TABLE_SUFFIXES and not found:
        raise InputError(f"unknown dataset {source.location!r}: use one of {', '.join(sorted(builtin_cards()))}, "
                         "the path of a .csv or .parquet file or of a folder of them, a glob pattern, or a database "
                         "URL with --query")
    frame, where, files, kind, location, card = _table(source, card, target)
    if kind == "builtin":
        version = fingerprint(replace(source, location=str(files[0]))) if files else None
    kept = newest_rows(frame, source, where)
    ds = _checked(kept, _with_overrides(card, target, task, where), where)
    return _with_provenance(ds, kind, location, files, source, len(frame), version)


def load_rows(source: Source | str) -> Dataset:
    """Rows to score, read as :func:`load` reads ``source`` (with its date window), without a target: new rows
    may have none, and no check that belongs to training data (a target's values) applies. Tables only."""
    source = as_source(source)
    card = builtin_cards().get(source.location)
    if card is not None and card.task == "image" or card is None and _holds_images(source, Path(source.location)):
        raise InputError(f"{source.shown}: image data; score images with python -m automl.predict MODEL_DIR DATA")
    frame, where, files, kind, location, card = _table(source, card, None)
    kept = newest_rows(frame, source, where).reset_index(drop=True)
    if kept.empty:
        raise InputError(f"{where}: no rows to score" + (" in the date window" if source.newest_days else ""))
    ds = Dataset(kept, card, where, _fingerprint(kept, card))
    return _with_provenance(ds, kind, location, files, source, len(frame))


def _table(source: Source, card: DatasetCard | None, target: str | None
           ) -> tuple[pd.DataFrame, str, list[Path], str, str, DatasetCard]:
    """The table ``source`` names, before its date window: a built-in ``card``'s, or its files' or query's; with
    where it came from, the files read, its kind and location for the provenance, and its card."""
    if card is not None:
        if source.newest_days is not None and source.date_column is None:
            raise InputError(f"{card.name}: --newest-days without --date-column picks files by modification time; "
                             "a built-in dataset is one file: add --date-column COL")
        frame, where, files = _load_builtin(card, target or card.target)
        return frame, where, files, "builtin", card.name, card
    (frame, files), where = read(source, target), source.shown
    return frame, where, files, source.kind, where, DatasetCard(name=_slug(source.name))


def _holds_images(source: Source, path: Path) -> bool:
    """An ``.npz`` file, or a folder of images (class subfolders, or pictures) and no tables."""
    if source.kind != "folder":
        return source.kind == "file" and is_image_source(path)
    entries = list(path.iterdir())
    return not any(is_table_file(e) for e in entries) and any(
        e.is_dir() or e.suffix.lower() in IMAGE_SUFFIXES for e in entries)


def _with_provenance(ds: Dataset, kind: str, location: str, files: list[Path] | None = None,
                     source: Source | None = None, rows_read: int | None = None,
                     source_fingerprint: str | None = None) -> Dataset:
    rows = len(ds.images) if ds.images is not None else len(ds.frame)
    ds.provenance = provenance(kind, location, source, files or [], rows if rows_read is None else rows_read, rows,
                               source_fingerprint)
    return ds


def from_frame(frame: pd.DataFrame, name: str, target: str | None, task: str | None = None) -> Dataset:
    """An in-memory table as a dataset, validated and fingerprinted exactly like a file."""
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    card = _with_overrides(DatasetCard(name=name), target, task, "DataFrame")
    check_unique_names(list(frame.columns), "DataFrame")
    return _with_provenance(_checked(compact(frame.reset_index(drop=True), card.target), card, "DataFrame"), "frame",
                            "DataFrame")


def _checked(frame: pd.DataFrame, card: DatasetCard, source: str) -> Dataset:
    validate(frame, card, source)
    return Dataset(frame, card, source, _fingerprint(frame, card))


def _load_builtin(card: DatasetCard, target: str | None) -> tuple[pd.DataFrame, str, list[Path]]:
    """The card's table, where it came from, and the file read (none for a bundled loader)."""
    if card.file:
        path = cards_dir() / card.file
        return read_table(path, target), str(path), [path]
    bunch = _call_loader(replace(card, loader_kwargs={"as_frame": True, **card.loader_kwargs}))
    return compact(bunch.frame, target), f"{card.loader}({card.loader_kwargs})", []


def _load_builtin_images(card: DatasetCard) -> tuple[np.ndarray, np.ndarray, str]:
    bunch = _call_loader(card)
    return bunch.images.astype("float32")[..., None], np.asarray(bunch.target), f"{card.loader}()"


def _call_loader(card: DatasetCard) -> Any:
    module, _, func = str(card.loader).rpartition(".")
    return getattr(importlib.import_module(module), func)(**card.loader_kwargs)


def _image_dataset(card: DatasetCard, x: np.ndarray | ImageRows, y: np.ndarray | None, source: str) -> Dataset:
    """Validate image data; the labels go in a one-column frame so targets work as for tables."""
    if y is None:
        raise InputError(f"{source}: no labels; put images in one subfolder per class, or save y= in the .npz")
    if len(x) == 0:
        raise InputError(f"{source}: no images")
    labels = pd.Series(y, name="label")
    if labels.nunique() < 2:
        raise InputError(f"{source}: every image has the label {labels.iloc[0]!r}; a model needs two classes or more")
    digest = hashlib.sha256()
    for batch in in_batches(x):  # the same digest as the whole array's bytes, without them all in memory
        digest.update(np.ascontiguousarray(batch).tobytes())
    digest.update(pd.util.hash_pandas_object(labels.astype(str), index=False).values.tobytes())
    digest.update(json.dumps(card.__dict__, sort_keys=True, default=str).encode())
    card = replace(card, target="label", task="image")
    return Dataset(labels.to_frame(), card, source, digest.hexdigest()[:16], images=x)


def _with_overrides(card: DatasetCard, target: str | None, task: str | None, source: str) -> DatasetCard:
    if target is None and card.target is None:
        raise InputError(f"{source}: no target column given; pass --target COLUMN")
    return replace(card, target=target or card.target, task=task or card.task)


def validate(frame: pd.DataFrame, card: DatasetCard, source: str) -> None:
    """Check the table once, at the boundary; raise :class:`InputError` on the first problem."""
    target = card.target
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise InputError(f"{source}: no data rows; give a table with a header row and data rows")
    if target not in frame.columns:
        raise InputError(f"{source}: target column {target!r} not found; columns are: "
                         f"{', '.join(map(str, frame.columns))}")
    for col in (*card.zero_means_missing, *card.drop):
        if col not in frame.columns:
            raise InputError(f"{source}: the dataset card names column {col!r}, which the file lacks")
    y = frame[target]
    if y.isna().all():
        raise InputError(f"{source}: target column {target!r} is empty; fill it or choose another target")
    n_values = y.nunique()
    if n_values < 2:
        raise InputError(f"{source}: target column {target!r} has a single value ({y.dropna().tolist()[0]!r}); "
                         "a model needs at least two classes or values to learn from")
    classification = card.task in ("binary", "multiclass") or (
        card.task is None and not pd.api.types.is_numeric_dtype(y.dtype))
    if classification and (n_values > MAX_CLASSES or y.notna().sum() < 2 * n_values):
        raise InputError(f"{source}: target column {target!r} has {n_values:,} classes in {y.notna().sum():,} rows, "
                         f"too many for classification (at most {MAX_CLASSES:,}, with 2 rows per class on average); "
                         "pass --task regression for a numeric target, or merge classes")
    if len(frame.columns) < 2:
        raise InputError(f"{source}: only the target column {target!r}; add feature columns")
    for col in frame.columns:
        values = frame[col]
        if values.isna().all():
            raise InputError(f"{source}: column {col!r} is empty in every row; drop it or fill it")
        if col not in card.drop:
            _check_finite(values, str(col), source)
        if (col != target and col not in card.drop and not pd.api.types.is_numeric_dtype(values.dtype)
                and not pd.api.types.is_datetime64_any_dtype(values.dtype)):
            _check_numeric_typos(values, str(col), source)


def distinct_counts(values: pd.Series) -> pd.Series:
    """How often each value occurs (missing cells left out): per category for a categorical, so it scales."""
    counts = values.value_counts(sort=False)
    return counts[counts > 0]


def _check_finite(values: pd.Series, col: str, source: str) -> None:
    """Infinite numbers (``inf``, ``-inf``, or beyond float32, to which features are compacted) break scaling and
    losses in every model; which value was meant is the user's call, so they are an error, not a missing cell."""
    if not pd.api.types.is_float_dtype(values.dtype):
        return
    # A NumPy column is read in place (no float64 copy of a large table); a nullable one needs its NA as NaN.
    numbers = values.to_numpy() if isinstance(values.dtype, np.dtype) else values.to_numpy("float64", na_value=np.nan)
    infinite = np.isinf(numbers)
    if infinite.any():
        first = int(np.argmax(infinite))
        raise InputError(f"{source}: column {col!r} holds infinite values (inf, -inf, or beyond float32's "
                         f"+-3.4e38) in {int(infinite.sum()):,} row(s), the first in row {values.index[first] + 1}; "
                         "replace them with numbers or leave the cells blank")


def _check_numeric_typos(values: pd.Series, col: str, source: str) -> None:
    """A column of numbers with a few words in it is a data error, not a category."""
    counts = distinct_counts(values)
    is_number = pd.to_numeric(counts.index.to_series(), errors="coerce").notna().to_numpy()
    share = counts[is_number].sum() / counts.sum()
    if _NUMERIC_SHARE <= share < 1.0:
        bad = counts[~is_number]
        first = int(np.argmax(values.isin(bad.index).to_numpy()))
        raise InputError(f"{source}: column {col!r} holds numbers but row {values.index[first] + 1} has "
                         f"{values.iloc[first]!r} ({bad.sum()} such cells); fix them or leave them blank")


def _fingerprint(frame: pd.DataFrame, card: DatasetCard) -> str:
    """A content hash of the data and the card: the key for caches and studies.

    Numbers are hashed as their bytes (about 1 GB/s); other columns by pandas' per-row hash, which
    for a categorical hashes each category once and ignores the order of the categories.
    """
    digest = hashlib.sha256(json.dumps(card.__dict__, sort_keys=True, default=str).encode())
    for col in frame.columns:
        values = frame[col]
        digest.update(f"\0{col}\0{values.dtype}\0".encode())
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":
            digest.update(np.ascontiguousarray(values.to_numpy()))
        else:
            digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy())
    return digest.hexdigest()[:16]


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return "-".join(filter(None, slug.split("-"))) or "dataset"
