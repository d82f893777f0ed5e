"""Preprocess: infer a schema once, then build a scikit-learn pipeline per training fold.

The pipeline is fitted on training rows only and saved with every model, so
predictions on raw rows need nothing but the model directory.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

from automl.data import Dataset, distinct_counts
from automl.encoders import CategoryCodes
from automl.errors import InputError
from automl.images import PixelScaler

__all__ = ["Schema", "infer_schema", "encode_target", "make_preprocessor", "dense_width", "CleanFrame",
           "ConditionalImputer", "DatetimeParts", "ManyLevelsTarget"]

#: Text columns with more distinct values than this (and mostly unique) are free text or ids.
_MAX_CATEGORIES = 50
#: A free-text or code column blank in at least this share of the rows (and filled in as many) keeps whether it
#: is filled as a feature, as H2O keeps a blank as a level of its own: Titanic's cabin is filled for 23 % of the
#: passengers, of whom 67 % survived, against 30 % of the others. Rarer blanks would make a near-constant column.
_FILLED_SHARE = 0.01
_ID_NAME = re.compile(r"(^|_|\b)(id|uuid|key)$|Id$", re.IGNORECASE)
#: A text column whose values parse as dates this often (missing cells aside) is a date column.
_DATE_SHARE = 0.95
#: The numbers a date becomes, by their ``Series.dt`` names; the hour only where times of day vary.
_DATE_PARTS = ("year", "month", "day", "day_of_week")


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
    #: Date and time columns: the model sees their year, month, day, weekday (and hour).
    datetime: list[str] = field(default_factory=list)
    #: Free text or codes that are often blank: the model sees whether each is filled (1.0) or not (0.0).
    filled: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical + self.datetime + self.filled

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
    numeric, categorical, datetime, filled = [], [], [], []
    dropped = {c: "dropped by the dataset card" for c in card.drop}
    for col in frame.columns:
        if col == ds.target or col in dropped:
            continue
        values = frame[col]
        if _single_value(values):
            dropped[col] = "a single value"
        elif _looks_like_id(col, values, len(frame)):
            dropped[col] = "a row identifier"
        elif pd.api.types.is_datetime64_any_dtype(values.dtype):
            datetime.append(col)
        elif pd.api.types.is_numeric_dtype(values.dtype):
            numeric.append(col)
        else:
            kind = _text_kind(distinct_counts(values))
            if kind == "numbers":
                numeric.append(col)  # numbers stored as text
            elif kind == "dates":
                datetime.append(col)
            elif kind:
                dropped[col] = kind
            elif (n_unique := values.nunique()) > _MAX_CATEGORIES and n_unique > 0.5 * values.notna().sum():
                if _FILLED_SHARE <= values.notna().mean() <= 1 - _FILLED_SHARE:
                    filled.append(col)
                else:
                    dropped[col] = f"free text or a code ({n_unique} distinct values)"
            else:
                categorical.append(col)
    return Schema(task, ds.target, numeric, categorical, list(card.zero_means_missing), classes, dropped,
                  datetime=datetime, filled=filled)


def _text_kind(counts: pd.Series) -> str | None:
    """``"numbers"`` or ``"dates"`` for a text column of those, a reason to drop it when it mixes them,
    else None (a category or free text). ``counts``: how often each distinct value occurs."""
    is_number = pd.to_numeric(counts.index.to_series(), errors="coerce").notna().to_numpy()
    if is_number.all():
        return "numbers"
    _, n_dates = _date_format(counts[~is_number])
    total, n_numbers = counts.sum(), counts[is_number].sum()
    if n_dates >= _DATE_SHARE * total:
        return "dates"
    if n_dates and n_numbers and n_dates + n_numbers >= _DATE_SHARE * total:
        return f"mixed numbers ({n_numbers} cells) and dates ({n_dates} cells); keep one kind per column"
    return None


def _date_format(counts: pd.Series) -> tuple[str | None, int]:
    """The date format that parses the most cells, and how many; ``counts``: cells per distinct text.

    Candidates are guessed from a few values, day first and month first (is 01/02 the 1st of
    February?). A format needs a year, a month and a day: "Mar" or a number is no date.
    """
    candidates = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas warns of every day-first guess
        for sample, dayfirst in itertools.product(counts.index[:20], (False, True)):
            fmt = guess_datetime_format(str(sample), dayfirst=dayfirst)
            if fmt and "%d" in fmt and ("%Y" in fmt or "%y" in fmt) and any(m in fmt for m in ("%m", "%b", "%B")):
                candidates.add("ISO8601" if fmt.startswith("%Y-%m-%d") else fmt)  # ISO: with or without a time
    parsed = {fmt: int(counts[_parse_dates(counts.index.to_series(), fmt).notna().to_numpy()].sum())
              for fmt in sorted(candidates)}
    best = max(parsed, key=parsed.__getitem__, default=None)
    return (best, parsed[best]) if best and parsed[best] else (None, 0)


def _parse_dates(values: pd.Series, fmt: str | None) -> pd.Series:
    """Dates as timestamps (text in UTC, so mixed offsets agree); what does not parse is NaT.

    Without ``fmt`` (a column that was a timestamp in training, given as text now) pandas guesses.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    return _by_category(values, lambda v: pd.to_datetime(v.astype("str"), format=fmt, errors="coerce", utc=True))


def _by_category(values: pd.Series, convert: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``convert(values)``, computed once per category for a categorical column (the fast path at scale)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return convert(values)
    table = convert(values.cat.categories.to_series()).array
    return pd.Series(table.take(values.cat.codes.to_numpy(), allow_fill=True), index=values.index, name=values.name)


def _infer_task(y: pd.Series) -> str:
    n_unique = y.nunique()
    if n_unique == 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(y):
        return "multiclass"
    integer_valued = bool(np.all(np.mod(y.to_numpy(dtype=float), 1) == 0))
    return "multiclass" if integer_valued and n_unique <= 10 else "regression"


def _is_number_column(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype)


def _single_value(values: pd.Series) -> bool:
    if _is_number_column(values):  # min and max need no hash table of 10M distinct floats
        return not values.max() > values.min()
    return values.nunique() <= 1


def _looks_like_id(col: str, values: pd.Series, n_rows: int) -> bool:
    """Unique in every row and named like an id, or the integers lo..lo+n-1 (also when read as float32)."""
    if values.isna().any():
        return False
    if _is_number_column(values):
        v = values.to_numpy(dtype="float64")
        lo = v.min()
        if v.max() - lo == n_rows - 1 and np.all(v == np.round(v)):
            return bool(np.bincount((v - lo).astype(np.int64)).max() == 1)  # n integers in n slots, once each
    return bool(_ID_NAME.search(str(col))) and values.nunique() == n_rows


def encode_target(schema: Schema, y: pd.Series) -> np.ndarray:
    """Class indices (in ``schema.classes`` order) or float values for regression."""
    if schema.task == "regression":
        return y.to_numpy(dtype="float64")
    index = {c: i for i, c in enumerate(schema.classes)}
    return y.map(index).to_numpy(dtype="int64")


class CleanFrame(BaseEstimator, TransformerMixin):
    """Apply the card's column rules and fix dtypes, by column name (order-independent).

    Numbers become float32; date columns pass through as they are, for :class:`DatetimeParts`;
    ``filled`` columns become 1.0 where filled, 0.0 where blank, after the numbers.
    """

    def __init__(self, numeric: list[str], categorical: list[str], zero_means_missing: list[str],
                 datetime: list[str] | None = None, filled: list[str] | None = None):
        self.numeric = numeric
        self.categorical = categorical
        self.zero_means_missing = zero_means_missing
        self.datetime = datetime
        self.filled = filled

    def fit(self, x: pd.DataFrame, y: Any = None) -> CleanFrame:
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for col in self.numeric:
            values = _by_category(x[col], lambda v: pd.to_numeric(v, errors="coerce")).astype("float32")
            out[col] = values.mask(values == 0) if col in self.zero_means_missing else values
        for col in self.filled or []:
            out[col] = x[col].notna().astype("float32")
        for col in self.categorical:
            out[col] = x[col].astype("object").where(x[col].notna(), np.nan)
        for col in self.datetime or []:
            out[col] = x[col]
        return pd.DataFrame(out, index=x.index)


class DatetimeParts(BaseEstimator, TransformerMixin):
    """Date columns as numbers: year, month, day, weekday (0 = Monday), and the hour where the
    training rows' times of day vary. Text is parsed with the format learnt from the training
    rows; what does not parse is missing (NaN)."""

    def fit(self, x: pd.DataFrame, y: Any = None) -> DatetimeParts:
        self.formats_: dict[str, str | None] = {}
        self.parts_: dict[str, list[str]] = {}
        for col in x.columns:
            values = x[col]
            is_stamp = pd.api.types.is_datetime64_any_dtype(values.dtype)
            self.formats_[col] = None if is_stamp else _date_format(distinct_counts(values))[0]
            hours = _parse_dates(values, self.formats_[col]).dt.hour
            self.parts_[col] = [*_DATE_PARTS, "hour"] if hours.nunique() > 1 else list(_DATE_PARTS)
        return self

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        columns = []
        for col, parts in self.parts_.items():
            stamps = _parse_dates(x[col], self.formats_[col]).dt
            columns += [getattr(stamps, part).to_numpy(dtype="float32", na_value=np.nan) for part in parts]
        return np.column_stack(columns) if columns else np.empty((len(x), 0), dtype="float32")


#: One-hot columns per categorical feature at most (the rarest levels share the last): 64 keeps every level of
#: typical codes (US states, 50-level synthetic columns) without letting an ID-like column widen the table.
MAX_ONEHOT = 64
#: A category, or a column's missing cells, needs this many training rows for a column of its own: fewer would
#: give a model a weight learnt from one or two rows (penguins' only training row without measurements is an
#: Adelie, and with a flag for it every model called the one such test row, a Gentoo, an Adelie).
MIN_ROWS = 5


class MissingFlags(BaseEstimator, TransformerMixin):
    """0/1 flags of the missing cells in the columns missing in at least ``min_rows`` training rows (scikit-learn's
    ``MissingIndicator`` flags a column missing once). Unscaled: a scaled flag of 1 row in 275 would read 16.6."""

    def __init__(self, min_rows: int = MIN_ROWS):
        self.min_rows = min_rows

    def fit(self, x: Any, y: Any = None) -> MissingFlags:
        self.features_ = np.flatnonzero(np.isnan(np.asarray(x, dtype="float32")).sum(axis=0) >= self.min_rows)
        return self

    def transform(self, x: Any) -> np.ndarray:
        # Only the flagged columns are read: no float copy of the whole block (it is imputed beside this).
        flagged = x.iloc[:, self.features_] if isinstance(x, pd.DataFrame) else np.asarray(x)[:, self.features_]
        return np.isnan(np.asarray(flagged, dtype="float32")).astype("float32")


#: Rows the conditional imputer is fitted on, at most (a sample; its regressions settle long before).
IMPUTE_MAX_ROWS = 5_000
#: Its rounds of regressions, at most (scikit-learn's default; it stops sooner once the imputed values settle).
IMPUTE_ROUNDS = 10
#: Incomplete columns the imputer regresses (those with the most missing cells; the others get their training mean,
#: 0 once scaled) and regressions (rounds x columns) per fit, at most: each costs ~3 ms whatever its size, and
#: help_baseline's 756 incomplete columns x 10 rounds took 8 s a fold, 20 s of a reference model's 23 s CV.
IMPUTE_COLUMNS, IMPUTE_REGRESSIONS = 64, 200
#: Rows the imputer transforms at once: its float64 working copies of a block stay small (all 96,000 incomplete
#: rows of the 200k synthetic table at once: 570 MB beside the output).
IMPUTE_BLOCK_ROWS = 32_768
#: Columns each regression reads, at most: drawn by their correlation with the missing one (a wide table's
#: hundreds of one-hot columns would make each regression cost as much as a model).
IMPUTE_PREDICTORS = 16


class ConditionalImputer(BaseEstimator, TransformerMixin):
    """Fills each missing number with its expected value given the row's other columns (scikit-learn's
    :class:`IterativeImputer`: a Bayesian ridge regression per column with missing cells, fitted on at most
    :data:`IMPUTE_MAX_ROWS` training rows), where mean imputation would put it at the column's mean whatever else the
    row says. Penguins' test row with no measurements is a Gentoo on Biscoe: at the mean of every measurement each
    model called it an Adelie (0.80); at Biscoe's expected measurements it is a Gentoo, as 74 % of Biscoe's are.

    Runs after scaling and one-hot encoding, so the regressions read the row's categories too; only rows with a
    missing cell are transformed. A wide table's :data:`IMPUTE_COLUMNS` most incomplete columns are regressed.
    """

    def __init__(self, max_rows: int = IMPUTE_MAX_ROWS, seed: int = 0):
        self.max_rows = max_rows
        self.seed = seed

    def fit(self, x: Any, y: Any = None) -> ConditionalImputer:
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (scikit-learn's opt-in)
        from sklearn.impute import IterativeImputer

        x = np.asarray(x)
        self.imputer_ = None
        missing = np.isnan(x).sum(axis=0)
        incomplete = np.flatnonzero(missing)
        self.mean_filled_ = np.sort(incomplete[np.argsort(-missing[incomplete], kind="stable")][IMPUTE_COLUMNS:])
        if len(incomplete):
            rows = np.random.default_rng(self.seed).permutation(len(x))[:self.max_rows]
            x = self._fill_means(x[np.sort(rows)])
            rounds = min(IMPUTE_ROUNDS, max(1, IMPUTE_REGRESSIONS // min(len(incomplete), IMPUTE_COLUMNS)))
            self.imputer_ = IterativeImputer(max_iter=rounds, n_nearest_features=IMPUTE_PREDICTORS,
                                             skip_complete=True, keep_empty_features=True, random_state=self.seed)
            with warnings.catch_warnings():  # "did not converge" after its rounds is expected
                warnings.simplefilter("ignore")
                self.imputer_.fit(x)
        return self

    def _fill_means(self, x: np.ndarray) -> np.ndarray:
        """A copy of ``x`` with the columns not regressed at their training mean (0: they are scaled)."""
        filled, x = getattr(self, "mean_filled_", []), x.copy()  # [] for models exported before it
        x[:, filled] = np.nan_to_num(x[:, filled])
        return x

    def transform(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype="float32")
        rows = np.flatnonzero(np.isnan(x).any(axis=1))
        if len(rows):
            x = x.copy()  # a table without blanks (most) passes through without a copy
        for start in range(0, len(rows), IMPUTE_BLOCK_ROWS):  # rows are imputed one by one: blocks change only rounding
            block = rows[start:start + IMPUTE_BLOCK_ROWS]
            # A column complete in training and missing here gets its training mean: about 0 once scaled.
            x[block] = (self.imputer_.transform(self._fill_means(x[block])) if self.imputer_ is not None
                        else np.nan_to_num(x[block]))
        return x


class ManyLevelsTarget(BaseEstimator, TransformerMixin):
    """Target encoding of the categorical columns with more than :data:`MAX_ONEHOT` levels (H2O's
    ``preprocessing=["target_encoding"]``): one-hot encoding keeps only their commonest levels, this adds each
    level's smoothed target mean (per class when multiclass), scikit-learn's :class:`TargetEncoder`.

    It is fitted on a fold's training rows only, like every step, and ``fit_transform`` cross-fits: a
    training row's value comes from the other rows of its training fold, so a model cannot learn a level's
    mean that includes its own target (a pure-noise column with a few rows per level would look predictive).
    A missing value is a level of its own.
    """

    def __init__(self, task: str):
        self.task = task

    def _select(self, x: pd.DataFrame, y: Any) -> TargetEncoder | None:
        self.columns_ = [c for c in x.columns if x[c].nunique() > MAX_ONEHOT]
        if not self.columns_:
            return None
        if y is None:
            raise ValueError(f"target encoding of {self.columns_} needs the target: fit with (x, y)")
        kind = {"regression": "continuous", "binary": "binary"}.get(self.task, "multiclass")
        folds = (KFold if kind == "continuous" else StratifiedKFold)(5, shuffle=True, random_state=0)
        return TargetEncoder(target_type=kind, cv=folds)

    def fit(self, x: pd.DataFrame, y: Any = None) -> ManyLevelsTarget:
        self.encoder_ = self._select(x, y)
        if self.encoder_ is not None:
            self.encoder_.fit(x[self.columns_], y)  # a plain fit: no row's own encoding is asked for
        return self

    def fit_transform(self, x: pd.DataFrame, y: Any = None, **fit_params: Any) -> np.ndarray:
        self.encoder_ = self._select(x, y)
        if self.encoder_ is None:
            return np.empty((len(x), 0), dtype="float32")
        return self.encoder_.fit_transform(x[self.columns_], y).astype("float32")

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        if self.encoder_ is None:
            return np.empty((len(x), 0), dtype="float32")
        return self.encoder_.transform(x[self.columns_]).astype("float32")


class TreeColumns(BaseEstimator, TransformerMixin):
    """For gradient boosting: numbers as they are (missing stays NaN), date parts, and strings as
    pandas categoricals with the training rows' categories (an unseen value is missing).

    LightGBM splits on such columns natively: every level keeps its own statistics, where one-hot
    encoding folds all but the most frequent levels into one column, and the table stays
    ``len(features)`` columns wide instead of hundreds.
    """

    def __init__(self, numeric: list[str], categorical: list[str], datetime: list[str]):
        self.numeric = numeric
        self.categorical = categorical
        self.datetime = datetime

    def fit(self, x: pd.DataFrame, y: Any = None) -> TreeColumns:
        self.categories_ = {col: pd.Index(x[col].dropna().unique()) for col in self.categorical}
        self.dates_ = DatetimeParts().fit(x[self.datetime]) if self.datetime else None
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        out: dict[str, Any] = {col: x[col].to_numpy(dtype="float32", na_value=np.nan) for col in self.numeric}
        if self.dates_ is not None:
            names = _date_part_names(self.dates_.parts_, taken={*self.numeric, *self.categorical})
            out.update(zip(names, self.dates_.transform(x[self.datetime]).T, strict=True))
        for col in self.categorical:
            out[col] = pd.Categorical(x[col], categories=self.categories_[col])
        return pd.DataFrame(out, index=x.index)


def _date_part_names(parts: dict[str, list[str]], taken: set[str]) -> list[str]:
    """``<date>_<part>`` for each date part, with "_" added until it names no column in ``taken`` nor another part:
    a table with a date ``d`` and a column ``d_year`` keeps both (the part silently replaced the column)."""
    names: list[str] = []
    for col, col_parts in parts.items():
        for part in col_parts:
            name = f"{col}_{part}"
            while name in taken:
                name += "_"
            taken.add(name)
            names.append(name)
    return names


def dense_width(x: pd.DataFrame, schema: Schema) -> int:
    """About how many columns the dense preprocessor makes of ``x`` (missing indicators aside): one per numeric
    column and date part, one per category up to :data:`MAX_ONEHOT` a column. Levels are read from categorical
    dtypes (what ingest makes of text), counted otherwise."""
    def levels(col: str) -> int:
        values = x[col]
        return len(values.cat.categories) if isinstance(values.dtype, pd.CategoricalDtype) else values.nunique()

    per_target = len(schema.classes) if schema.task == "multiclass" else 1
    return (len(schema.numeric) + len(schema.filled) + (len(_DATE_PARTS) + 1) * len(schema.datetime)
            + sum(min(levels(c), MAX_ONEHOT) + (per_target if levels(c) > MAX_ONEHOT else 0)
                  for c in schema.categorical))


def make_preprocessor(schema: Schema, kind: str = "dense") -> Pipeline | PixelScaler:
    """An unfitted pipeline: column rules, date parts, scaling with unscaled missing flags (:class:`MissingFlags`),
    one-hot encoding (rare and unseen categories share one column) and, for columns of more levels than that
    keeps, target encoding (:class:`ManyLevelsTarget`: fit it with the target, and transform training rows with
    ``fit_transform``, which cross-fits), then each missing number imputed from the rest of its row
    (:class:`ConditionalImputer`); float32 out.
    ``kind="trees"``: the column rules and :class:`TreeColumns` (for LightGBM). ``kind="network"``: the dense
    matrix, then one :class:`CategoryCodes` column per categorical feature, last (a network embeds them or drops
    them, see :class:`automl.layers.CategoryEmbeddings`). Images only get their pixels scaled."""
    if schema.task == "image":
        return PixelScaler()
    clean = CleanFrame(schema.numeric, schema.categorical, schema.zero_means_missing, schema.datetime, schema.filled)
    if kind == "trees":  # a filled flag is a number from here on
        return Pipeline([("clean", clean), ("columns", TreeColumns(schema.numeric + schema.filled, schema.categorical,
                                                                   schema.datetime))])

    def scale_and_flag() -> FeatureUnion:  # a missing cell stays NaN for ConditionalImputer
        return FeatureUnion([("values", StandardScaler()), ("missing", MissingFlags())])

    onehot = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=MIN_ROWS, max_categories=MAX_ONEHOT,
                           sparse_output=False, dtype=np.float32)
    categorical = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                            ("onehot", onehot)])
    columns = ColumnTransformer([("numeric", scale_and_flag(), schema.numeric),
                                 ("filled", "passthrough", schema.filled),  # 0/1 like the missing flags
                                 ("categorical", categorical, schema.categorical),
                                 ("target", ManyLevelsTarget(schema.task), schema.categorical),
                                 ("datetime", Pipeline([("parts", DatetimeParts()), ("numbers", scale_and_flag())]),
                                  schema.datetime)])
    steps = [("clean", clean), ("columns", columns), ("impute", ConditionalImputer())]
    if kind == "network" and schema.categorical:  # the codes after imputation: no number is imputed from a code
        codes = ColumnTransformer([("codes", CategoryCodes(MIN_ROWS), schema.categorical)])
        return Pipeline([("clean", clean), ("both", FeatureUnion([("dense", Pipeline(steps[1:])),
                                                                    ("codes", codes)]))])
    return Pipeline(steps)
