"""Ingest: dataset cards, reading CSV/Parquet files, and validating them once at the boundary.

Every problem with the user's input becomes an :class:`InputError` whose one-line
message names the file, column or value and says what to do.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.errors import InputError
from automl.images import is_image_source, load_images

__all__ = ["DatasetCard", "Dataset", "cards_dir", "builtin_cards", "load", "from_frame", "read_table", "validate",
           "TASKS"]

TASKS = ("binary", "multiclass", "regression", "image")
#: A text column whose values parse as numbers this often is a numeric column with typos.
_NUMERIC_SHARE = 0.95


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
    images: np.ndarray | None = None

    @property
    def target(self) -> str:
        assert self.card.target is not None
        return self.card.target


def cards_dir() -> Path:
    """The folder of built-in cards: inside the wheel, or ``datasets/`` in a checkout."""
    installed = Path(__file__).parent / "_datasets"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "datasets"


def builtin_cards() -> dict[str, DatasetCard]:
    """Built-in dataset cards by name."""
    cards = (DatasetCard.from_yaml(p) for p in sorted(cards_dir().glob("*.yaml")))
    return {c.name: c for c in cards}


def load(name_or_path: str, target: str | None = None, task: str | None = None) -> Dataset:
    """Load a built-in dataset by name, or a CSV/Parquet file with ``target``; validate it."""
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    cards = builtin_cards()
    path = Path(name_or_path)
    if name_or_path in cards and cards[name_or_path].task == "image":
        return _image_dataset(cards[name_or_path], *_load_builtin_images(cards[name_or_path]))
    if name_or_path not in cards and is_image_source(path):
        if task not in (None, "image"):
            raise InputError(f"{path}: image data, but --task {task}; drop --task or use --task image")
        x, y, _ = load_images(path)
        return _image_dataset(DatasetCard(name=_slug(path.stem), target="label", task="image"), x, y, str(path))
    if name_or_path in cards:
        card = cards[name_or_path]
        frame, source = _load_builtin(card)
    elif path.suffix.lower() in (".csv", ".parquet", ".pq") or path.exists():
        frame, source = read_table(path), str(path)
        card = DatasetCard(name=_slug(path.stem))
    else:
        raise InputError(f"unknown dataset {name_or_path!r}: use one of {', '.join(sorted(cards))} "
                         "or the path of a .csv or .parquet file")
    return _checked(frame, _with_overrides(card, target, task, source), source)


def from_frame(frame: pd.DataFrame, name: str, target: str | None, task: str | None = None) -> Dataset:
    """An in-memory table as a dataset, validated and fingerprinted exactly like a file."""
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    card = _with_overrides(DatasetCard(name=name), target, task, "DataFrame")
    return _checked(frame.reset_index(drop=True), card, "DataFrame")


def _checked(frame: pd.DataFrame, card: DatasetCard, source: str) -> Dataset:
    validate(frame, card, source)
    return Dataset(frame, card, source, _fingerprint(frame, card))


def _load_builtin(card: DatasetCard) -> tuple[pd.DataFrame, str]:
    if card.file:
        path = cards_dir() / card.file
        return read_table(path), str(path)
    bunch = _call_loader(replace(card, loader_kwargs={"as_frame": True, **card.loader_kwargs}))
    return bunch.frame, f"{card.loader}({card.loader_kwargs})"


def _load_builtin_images(card: DatasetCard) -> tuple[np.ndarray, np.ndarray, str]:
    bunch = _call_loader(card)
    return bunch.images.astype("float32")[..., None], np.asarray(bunch.target), f"{card.loader}()"


def _call_loader(card: DatasetCard) -> Any:
    module, _, func = str(card.loader).rpartition(".")
    return getattr(importlib.import_module(module), func)(**card.loader_kwargs)


def _image_dataset(card: DatasetCard, x: np.ndarray, y: np.ndarray | None, source: str) -> Dataset:
    """Validate image data; the labels go in a one-column frame so targets work as for tables."""
    if y is None:
        raise InputError(f"{source}: no labels; put images in one subfolder per class, or save y= in the .npz")
    if len(x) == 0:
        raise InputError(f"{source}: no images")
    labels = pd.Series(y, name="label")
    if labels.nunique() < 2:
        raise InputError(f"{source}: every image has the label {labels.iloc[0]!r}; a model needs two classes or more")
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(pd.util.hash_pandas_object(labels.astype(str), index=False).values.tobytes())
    digest.update(json.dumps(card.__dict__, sort_keys=True, default=str).encode())
    card = replace(card, target="label", task="image")
    return Dataset(labels.to_frame(), card, source, digest.hexdigest()[:16], images=x)


def _with_overrides(card: DatasetCard, target: str | None, task: str | None, source: str) -> DatasetCard:
    if target is None and card.target is None:
        raise InputError(f"{source}: no target column given; pass --target COLUMN")
    return replace(card, target=target or card.target, task=task or card.task)


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a .csv or .parquet file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            _check_csv_header(path)
            frame = pd.read_csv(path)
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty; give a table with a header row and data rows") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot be read as a table ({reason}); "
                         "give a UTF-8 CSV with a header row or a Parquet file") from None
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise InputError(f"{path}: duplicate column names {dupes}; rename them so each is unique")
    return frame


def _check_csv_header(path: Path) -> None:
    """Reject duplicate header names, which pandas would silently rename to ``x.1``."""
    with path.open(newline="", encoding="utf-8-sig") as fh:  # pandas drops a BOM too
        header = next(csv.reader(fh), None)
    if not header:
        raise InputError(f"{path}: the file is empty; give a table with a header row and data rows")
    seen: set[str] = set()
    dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if dupes:
        raise InputError(f"{path}: duplicate column names {dupes}; rename them so each is unique")


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
    if y.dropna().nunique() < 2:
        raise InputError(f"{source}: target column {target!r} has a single value ({y.dropna().tolist()[0]!r}); "
                         "a model needs at least two classes or values to learn from")
    if len(frame.columns) < 2:
        raise InputError(f"{source}: only the target column {target!r}; add feature columns")
    for col in frame.columns:
        values = frame[col]
        if values.isna().all():
            raise InputError(f"{source}: column {col!r} is empty in every row; drop it or fill it")
        if col != target and not pd.api.types.is_numeric_dtype(values) and col not in card.drop:
            _check_numeric_typos(values, str(col), source)


def _check_numeric_typos(values: pd.Series, col: str, source: str) -> None:
    """A column of numbers with a few words in it is a data error, not a category."""
    present = values.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    share = numbers.notna().mean()
    if _NUMERIC_SHARE <= share < 1.0:
        bad = present[numbers.isna()]
        raise InputError(f"{source}: column {col!r} holds numbers but row {bad.index[0] + 1} has "
                         f"{bad.iloc[0]!r} ({len(bad)} such cells); fix them or leave them blank")


def _fingerprint(frame: pd.DataFrame, card: DatasetCard) -> str:
    """A content hash of the data and the card: the key for caches and studies."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).values.tobytes())
    digest.update(json.dumps(card.__dict__, sort_keys=True, default=str).encode())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return "-".join(filter(None, slug.split("-"))) or "dataset"
