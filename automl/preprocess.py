"""Preprocess: infer a schema once, then build a scikit-learn pipeline per training fold.

The pipeline is fitted on training rows only and saved with every model, so
predictions on raw rows need nothing but the model directory.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from automl.data import Dataset
from automl.errors import InputError
from automl.images import PixelScaler

__all__ = ["Schema", "infer_schema", "encode_target", "make_preprocessor", "CleanFrame"]

#: Text columns with more distinct values than this (and mostly unique) are free text or ids.
_MAX_CATEGORIES = 50
_ID_NAME = re.compile(r"(^|_|\b)(id|uuid|key)$|Id$", re.IGNORECASE)


@dataclass
class Schema:
    """The columns a model uses and how, plus the task and its class labels."""

    task: str
    target: str
    numeric: list[str]
    categorical: list[str]
    zero_means_missing: list[str]
    classes: list[Any] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    #: For image tasks: (height, width, channels) of every image.
    image_shape: list[int] | None = None

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def infer_schema(ds: Dataset) -> Schema:
    """Decide the task, the class labels and each column's role from the data and its card."""
    frame, card = ds.frame, ds.card
    y = frame[ds.target].dropna()
    if ds.images is not None:
        classes = sorted(y.unique().tolist(), key=lambda v: (str(type(v)), v))
        return Schema("image", ds.target, [], [], [], classes, image_shape=list(ds.images.shape[1:]))
    task = card.task or _infer_task(y)
    classes: list[Any] = []
    if task != "regression":
        classes = sorted(y.unique().tolist(), key=lambda v: (str(type(v)), v))
        if task == "binary" and len(classes) != 2:
            raise InputError(f"{ds.source}: task 'binary' but target {ds.target!r} has {len(classes)} classes; "
                             "use --task multiclass")
    elif not pd.api.types.is_numeric_dtype(y):
        raise InputError(f"{ds.source}: task 'regression' needs a numeric target, but {ds.target!r} holds "
                         f"{y.iloc[0]!r}; use --task binary or multiclass")
    numeric, categorical, dropped = [], [], {c: "dropped by the dataset card" for c in card.drop}
    for col in frame.columns:
        if col == ds.target or col in dropped:
            continue
        values = frame[col].dropna()
        n_unique = values.nunique()
        if n_unique <= 1:
            dropped[col] = "a single value"
        elif _looks_like_id(col, values, len(frame)):
            dropped[col] = "a row identifier"
        elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            numeric.append(col)
        elif pd.to_numeric(values, errors="coerce").notna().all():
            numeric.append(col)  # numbers stored as text
        elif n_unique > _MAX_CATEGORIES and n_unique > 0.5 * len(values):
            dropped[col] = f"free text or a code ({n_unique} distinct values)"
        else:
            categorical.append(col)
    return Schema(task, ds.target, numeric, categorical, list(card.zero_means_missing), classes, dropped)


def _infer_task(y: pd.Series) -> str:
    n_unique = y.nunique()
    if n_unique == 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(y):
        return "multiclass"
    integer_valued = bool(np.all(np.mod(y.to_numpy(dtype=float), 1) == 0))
    return "multiclass" if integer_valued and n_unique <= 10 else "regression"


def _looks_like_id(col: str, values: pd.Series, n_rows: int) -> bool:
    if values.nunique() != n_rows:
        return False
    if _ID_NAME.search(str(col)):
        return True
    if pd.api.types.is_integer_dtype(values):
        ordered = values.sort_values().to_numpy()
        return bool(np.all(np.diff(ordered) == 1))
    return False


def encode_target(schema: Schema, y: pd.Series) -> np.ndarray:
    """Class indices (in ``schema.classes`` order) or float values for regression."""
    if schema.task == "regression":
        return y.to_numpy(dtype="float64")
    index = {c: i for i, c in enumerate(schema.classes)}
    return y.map(index).to_numpy(dtype="int64")


class CleanFrame(BaseEstimator, TransformerMixin):
    """Apply the card's column rules and fix dtypes, by column name (order-independent)."""

    def __init__(self, numeric: list[str], categorical: list[str], zero_means_missing: list[str]):
        self.numeric = numeric
        self.categorical = categorical
        self.zero_means_missing = zero_means_missing

    def fit(self, x: pd.DataFrame, y: Any = None) -> CleanFrame:
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=x.index)
        for col in self.numeric:
            values = pd.to_numeric(x[col], errors="coerce").astype("float64")
            out[col] = values.mask(values == 0) if col in self.zero_means_missing else values
        for col in self.categorical:
            out[col] = x[col].astype("object").where(x[col].notna(), np.nan)
        return out


def make_preprocessor(schema: Schema) -> Pipeline | PixelScaler:
    """An unfitted pipeline: column rules, median imputation with missing indicators,
    scaling, and one-hot encoding (rare and unseen categories share one column).
    Images only get their pixels scaled."""
    if schema.task == "image":
        return PixelScaler()
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler())])
    categorical = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                            ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5,
                                                     max_categories=20, sparse_output=False))])
    columns = ColumnTransformer([("numeric", numeric, schema.numeric),
                                 ("categorical", categorical, schema.categorical)])
    return Pipeline([("clean", CleanFrame(schema.numeric, schema.categorical, schema.zero_means_missing)),
                     ("columns", columns)])
