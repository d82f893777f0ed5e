"""Drift: compare incoming rows and a model's predictions with the rows it was trained on.

A :class:`Profile` summarises the reference table (the champion's training rows) in O(features x bins), never
the rows: per column its kind, blank share, and either decile bins with a small sample (numbers, dates) or the
shares of its most frequent categories. :func:`compare` scores new rows against it, one row per column::

    profile = Profile.from_frame(train, target="Outcome", predictions=model.predict(train))
    profile.save(folder / "profile.json")
    table = compare(Profile.load(folder / "profile.json"), rows, predictions=model.predict(rows))
    write_drift_csv(table, folder / "drift.csv")
    summary(table)  # "1 of 8 features drifted (Glucose psi 1.31); predictions psi 0.44 (drifted)"

A column *drifted* when its population stability index is at least :data:`PSI_DRIFT` (0.2, the field's
"significant shift") **and** a test says the difference is not chance (p < :data:`P_DRIFT`): Kolmogorov-Smirnov
for numbers and dates, chi-squared for categories. PSI alone cries wolf on a small batch (its noise floor is about
bins / rows), a test alone flags trivial shifts on a large one; together, neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from automl.io import atomic_write_text, write_csv

__all__ = ["Profile", "ColumnProfile", "compare", "write_drift_csv", "summary", "drifted", "kind_of",
           "COLUMNS", "STATUSES", "PSI_DRIFT", "P_DRIFT"]

#: Significant shift by the usual PSI convention (< 0.1 none, 0.1-0.2 moderate, >= 0.2 significant).
PSI_DRIFT = 0.2
PSI_MODERATE = 0.1
#: ...and the test must reject "same distribution" at this level, so a small batch does not cry wolf.
P_DRIFT = 0.01
#: A column became blank: blank in at least this share of the current rows...
BLANK_NOW = 0.95
#: ...while the reference had it filled in at least half of its rows.
BLANK_BEFORE = 0.5
#: Floor for an empty bin's share in the PSI (ln 0 is undefined).
EPSILON = 1e-4
#: Reference values kept per numeric column for the KS test.
SAMPLE_SIZE = 2000
#: Categories kept per categorical column; the rest are pooled as "other".
TOP_CATEGORIES = 50
#: A category rarer than this in the reference is pooled too: an identifier-like column (a name, a ticket) then
#: reads as "all other" on both sides instead of drifting in every random split (measured on titanic's Name).
MIN_CATEGORY_SHARE = 0.01
DECILES = np.linspace(0.1, 0.9, 9)
FORMAT = 1

#: The comparison table's columns, in order; ``role`` is "feature" or "prediction".
COLUMNS = ["feature", "role", "kind", "psi", "p_value", "test", "blank_share_reference", "blank_share_current",
           "status", "detail"]
#: Statuses, worst first (the table's sort order).
STATUSES = ("missing", "type_changed", "blank", "drifted", "new", "ok")
_PROBLEMS = ("missing", "type_changed", "blank", "drifted")


def kind_of(dtype: Any) -> str:
    """"numeric", "categorical" or "datetime", from a pandas dtype; booleans are categorical."""
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "numeric" if pd.api.types.is_numeric_dtype(dtype) else "categorical"


@dataclass(frozen=True)
class ColumnProfile:
    """One reference column. ``shares`` sums to 1 and has two cells beyond the bins: numbers and dates have
    ``len(edges) + 1`` bins (open ends, right-closed) then blank; categories have one cell per entry of
    ``categories``, then "other", then blank. Numbers are kept at float32 precision, as the tables store them."""

    name: str
    kind: str
    blank_share: float
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    sample: tuple[float, ...] = ()

    @classmethod
    def from_values(cls, name: str, values: pd.Series) -> ColumnProfile:
        """Profile one reference column."""
        kind = kind_of(values.dtype)
        if kind == "categorical":
            counts, blank = _category_counts(values)
            ranked = counts.sort_index().sort_values(ascending=False, kind="stable")
            top = ranked[ranked >= MIN_CATEGORY_SHARE * len(values)].head(TOP_CATEGORIES)
            cells = [*top.to_numpy(), counts.sum() - top.sum(), blank]
            return cls(name, kind, blank / len(values), _floats(_fractions(cells)), categories=tuple(top.index))
        numbers = _numbers(values, kind)
        present = numbers[~np.isnan(numbers)]
        edges = np.unique(_float32(np.quantile(present, DECILES))) if present.size else np.empty(0)
        picked = np.random.default_rng(0).choice(present, min(SAMPLE_SIZE, present.size), replace=False)
        return cls(name, kind, 1 - present.size / len(values), _floats(_fractions(_bin_counts(edges, numbers))),
                   edges=_short(edges), sample=_short(np.sort(picked)))


@dataclass(frozen=True)
class Profile:
    """A reference table's drift profile: its row count, target, feature columns and prediction columns."""

    rows: int
    target: str | None
    features: tuple[ColumnProfile, ...]
    predictions: tuple[ColumnProfile, ...] = ()

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, target: str | None = None, predictions: Any = None) -> Profile:
        """Profile ``frame``'s columns but ``target``, and the model's ``predictions`` (for its rows, or for others
        like them: a champion's holdout, which no model trained on, as new rows will be).

        ``predictions``: a 1-D array of scores, probabilities of the positive class or regression values; a 2-D
        array or frame of class probabilities (a model's ``predict()`` frame works: its ``p_<class>`` columns are
        read). Each class column is profiled as ``prediction:<class>`` (with two classes, the second one's as
        ``prediction``): probabilities show a model growing unsure before a single argmax label changes.
        """
        _check(frame)
        features = tuple(ColumnProfile.from_values(str(col), frame[col]) for col in frame.columns
                         if str(col) != target)
        scored = _prediction_columns(predictions)
        return cls(len(frame), target, features,
                   tuple(ColumnProfile.from_values(name, values) for name, values in scored.items()))

    def to_json(self) -> str:
        """The profile as compact JSON (kilobytes per column, whatever the rows)."""
        return json.dumps({"format": FORMAT, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """The profile :meth:`to_json` wrote."""
        raw = json.loads(text)
        if raw.pop("format", None) != FORMAT:
            raise ValueError(f"not a drift profile of format {FORMAT}: {text[:60]!r}")

        def columns(items: list[dict[str, Any]]) -> tuple[ColumnProfile, ...]:
            return tuple(ColumnProfile(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.items()})
                         for item in items)

        return cls(raw["rows"], raw["target"], columns(raw["features"]), columns(raw["predictions"]))

    def save(self, path: Path | str) -> None:
        """Write the profile to ``path`` atomically."""
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> Profile:
        """Read a profile :meth:`save` wrote."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def compare(profile: Profile, frame: pd.DataFrame, predictions: Any = None) -> pd.DataFrame:
    """Compare ``frame`` (and the model's ``predictions``, for its rows or for others from the same source, such as
    a holdout) with the reference ``profile``.

    One row per reference column, per new column (``new``, informational) and per prediction column when
    ``predictions`` is given (shaped as for :meth:`Profile.from_frame`); :data:`COLUMNS`, worst first: problems
    by :data:`STATUSES` order, then PSI descending. A status is, first that applies:

    - ``missing``: the column is absent from ``frame``;
    - ``blank``: blank (NaN, None, empty text) in >= 95% of the rows, where the reference had it in < 50%;
    - ``type_changed``: its kind (numeric, categorical, datetime) differs, e.g. numbers now arrive as text
      (still compared, as numbers where they parse);
    - ``drifted``: PSI >= 0.2 and the test's p-value < 0.01 (KS on numbers and dates, Bonferroni-combined with a
      chi-squared test of the blank share when either side has blanks; chi-squared on categories);
    - ``ok``; ``new`` for a column the reference lacks.
    """
    _check(frame)
    by_name = {str(col): frame[col] for col in frame.columns}
    rows = [_compare_column(ref, by_name.get(ref.name), profile.rows, "feature") for ref in profile.features]
    known = {ref.name for ref in profile.features} | {profile.target}
    rows += [_new_row(name, values, "feature") for name, values in by_name.items() if name not in known]
    if predictions is not None:
        scored = _prediction_columns(predictions)
        rows += [_compare_column(ref, scored.get(ref.name), profile.rows, "prediction")
                 for ref in profile.predictions]
        referenced = {ref.name for ref in profile.predictions}
        rows += [_new_row(name, values, "prediction") for name, values in scored.items() if name not in referenced]
    return _worst_first(pd.DataFrame(rows, columns=COLUMNS))


def write_drift_csv(table: pd.DataFrame, path: Path | str) -> None:
    """Write a :func:`compare` table atomically as CSV (text cells guarded against spreadsheet formulas)."""
    write_csv(table, Path(path))


def drifted(table: pd.DataFrame) -> list[str]:
    """The columns (features and predictions) whose status is a problem: missing, type_changed, blank or
    drifted, worst first."""
    return _worst_first(table).loc[lambda t: t["status"].isin(_PROBLEMS), "feature"].tolist()


def summary(table: pd.DataFrame) -> str:
    """One line for history rows and events, e.g. "2 of 8 features drifted (Glucose psi 1.31, BMI psi 0.27);
    1 blank (Insulin); predictions psi 0.44 (drifted)"."""
    table = _worst_first(table)
    features = table[table["role"] == "feature"]
    shifted = features[features["status"] == "drifted"]
    line = f"{len(shifted)} of {int((features['status'] != 'new').sum())} features drifted"
    parts = [line + (f" ({_names(shifted, psi=True)})" if len(shifted) else "")]
    for status, label in (("missing", "missing"), ("blank", "blank"), ("type_changed", "changed type"),
                          ("new", "new")):
        found = features[features["status"] == status]
        if len(found):
            parts.append(f"{len(found)} {label} ({_names(found)})")
    scored = table[table["role"] == "prediction"]
    if len(scored):
        worst = scored.iloc[0]
        who = "" if worst["feature"] == "prediction" else f"{worst['feature']} "
        parts.append(f"predictions psi {worst['psi']:.2f} ({who}{worst['status']})")
    return "; ".join(parts)


def _check(frame: pd.DataFrame) -> None:
    if len(frame) == 0:
        raise ValueError(f"drift needs rows, but got {len(frame)=}")
    twice = sorted({str(col) for col in frame.columns[frame.columns.astype(str).duplicated()]})
    if twice:
        raise ValueError(f"column names must be unique, but got {twice=}")


# -- one column --------------------------------------------------------------------------
def _compare_column(ref: ColumnProfile, values: pd.Series | None, ref_rows: int, role: str) -> dict[str, Any]:
    row = {"feature": ref.name, "role": role, "kind": ref.kind, "psi": np.nan, "p_value": np.nan, "test": "",
           "blank_share_reference": ref.blank_share, "blank_share_current": np.nan}
    if values is None:
        return {**row, "status": "missing", "detail": "absent from the current rows"}
    values = values.reset_index(drop=True)
    blank = _blank_share(values)
    measured = (_numeric_drift if ref.kind != "categorical" else _categorical_drift)(ref, values, ref_rows)
    row.update(blank_share_current=blank, psi=measured["psi"], p_value=measured["p_value"], test=measured["test"])
    kind = kind_of(values.dtype)
    if blank >= BLANK_NOW and ref.blank_share < BLANK_BEFORE:
        status, detail = "blank", f"blank in {blank:.0%} of rows (reference {ref.blank_share:.0%})"
    elif kind != ref.kind and blank < 1:
        status, detail = "type_changed", f"{ref.kind} in the reference, {kind} now{measured['parsed']}"
    elif measured["psi"] >= PSI_DRIFT and measured["p_value"] < P_DRIFT:
        status, detail = "drifted", measured["change"]
    else:
        status, detail = "ok", _quiet_detail(measured)
    return {**row, "status": status, "detail": detail}


def _quiet_detail(measured: dict[str, Any]) -> str:
    """Why an ok column is ok, when its PSI alone would say otherwise."""
    psi, p_value = measured["psi"], measured["p_value"]
    if psi >= PSI_DRIFT:
        return f"{measured['change']}, but p {p_value:.2g} >= {P_DRIFT}: too few rows to tell"
    return f"moderate shift: {measured['change']}" if psi >= PSI_MODERATE else ""


def _new_row(name: str, values: pd.Series, role: str) -> dict[str, Any]:
    return {"feature": name, "role": role, "kind": kind_of(values.dtype), "psi": np.nan, "p_value": np.nan,
            "test": "", "blank_share_reference": np.nan, "blank_share_current": _blank_share(values),
            "status": "new", "detail": "not in the reference"}


def _numeric_drift(ref: ColumnProfile, values: pd.Series, ref_rows: int) -> dict[str, Any]:
    """PSI over the reference's bins, KS against its sample, and a chi-squared test of the blank share."""
    numbers = _numbers(values, ref.kind)
    present = numbers[~np.isnan(numbers)]
    edges, sample = _float32(ref.edges), _float32(ref.sample)
    shares = _fractions(_bin_counts(edges, numbers))
    psi = _psi(np.asarray(ref.shares), shares)
    p_ks = stats.ks_2samp(sample, present, method="asymp").pvalue if sample.size and present.size else np.nan
    ref_blank = round(ref.blank_share * ref_rows)
    cur_blank = numbers.size - present.size
    p_value, test = p_ks, "ks"
    if ref_blank or cur_blank:  # the KS sees the filled cells only: test the blanks too, Bonferroni for two tests
        p_blank = _chi2_p(np.array([[ref_blank, ref_rows - ref_blank], [cur_blank, present.size]]))
        p_value, test = (p_ks, "ks") if np.nan_to_num(p_ks, nan=1.0) <= p_blank else (p_blank, "chi2")
        p_value = min(1.0, 2 * p_value)
    filled = len(values) - _blank_count(values)
    parsed = "" if kind_of(values.dtype) != "categorical" else f" ({present.size / max(filled, 1):.0%} parse)"
    change = _largest_move(_bin_labels(ref.edges, ref.kind), np.asarray(ref.shares), shares)
    if sample.size and present.size:
        change = f"median {_show(np.median(sample), ref.kind)} -> {_show(np.median(present), ref.kind)}; {change}"
    return {"psi": psi, "p_value": p_value, "test": test, "parsed": parsed, "change": change}


def _categorical_drift(ref: ColumnProfile, values: pd.Series, ref_rows: int) -> dict[str, Any]:
    """PSI and a chi-squared test over the reference's categories, "other" and blank."""
    counts, blank = _category_counts(values)
    top = counts.reindex(list(ref.categories), fill_value=0).to_numpy()
    current = np.array([*top, counts.sum() - top.sum(), blank], dtype=float)
    shares = _fractions(current)
    reference = np.asarray(ref.shares)
    return {"psi": _psi(reference, shares), "p_value": _chi2_p(np.vstack([reference * ref_rows, current])),
            "test": "chi2", "parsed": "",
            "change": _largest_move([*map(repr, ref.categories), "(other)", "(blank)"], reference, shares)}


def _largest_move(labels: list[str], reference: np.ndarray, current: np.ndarray) -> str:
    """The cell whose share moved most, e.g. "'male' 65% -> 35%"."""
    moved = int(np.argmax(np.abs(current - reference)))
    return f"{labels[moved]} {reference[moved]:.0%} -> {current[moved]:.0%}"


def _bin_labels(edges: tuple[float, ...], kind: str) -> list[str]:
    """Names of a numeric column's cells: "<= a", "(a, b]", ..., "> z", "(blank)"."""
    shown = [_show(edge, kind) for edge in edges]
    inner = [f"({low}, {high}]" for low, high in zip(shown, shown[1:], strict=False)]
    return ([f"<= {shown[0]}", *inner, f"> {shown[-1]}"] if shown else ["all"]) + ["(blank)"]


# -- measures ----------------------------------------------------------------------------
def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index; empty cells count as :data:`EPSILON` (ln 0 is undefined)."""
    ref, cur = np.maximum(reference, EPSILON), np.maximum(current, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _chi2_p(table: np.ndarray) -> float:
    """The chi-squared test of independence of a 2 x k count table, cells empty on both sides dropped."""
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _bin_counts(edges: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Rows per bin (open ends, right-closed), then blank rows."""
    present = numbers[~np.isnan(numbers)]
    bins = np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)
    return np.append(bins, numbers.size - present.size)


def _fractions(counts: Any) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


# -- values ------------------------------------------------------------------------------
def _float32(values: Any) -> np.ndarray:
    """Numbers at float32 precision (as float64): the tables store features as float32, and a value must land
    in the same bin, and tie in the KS test, whether it arrives as float32 or float64."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def _short(values: np.ndarray) -> tuple[float, ...]:
    """Each float32 value as its shortest decimal (a small JSON that reads back to the same float32)."""
    return tuple(float(str(v)) for v in np.asarray(values, dtype=np.float32))


def _numbers(values: pd.Series, kind: str) -> np.ndarray:
    """A column as float32-precision numbers, NaN for blank or unparsable cells; dates as days since 1970."""
    if kind == "datetime":
        if not pd.api.types.is_datetime64_any_dtype(values.dtype):
            values = pd.to_datetime(values.astype("string"), errors="coerce", utc=True, format="ISO8601")
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        values = (values - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    elif pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype("Float64")
    elif not pd.api.types.is_numeric_dtype(values.dtype):
        values = pd.to_numeric(values.astype("string"), errors="coerce")
    return _float32(values.to_numpy(dtype="float64", na_value=np.nan))


def _category_counts(values: pd.Series) -> tuple[pd.Series, int]:
    """Rows per filled value (as text, so 1 and "1" are one category), and the number of blank rows."""
    counts = values.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]
    text = pd.Index([str(key) for key in counts.index], dtype=object)
    filled = text.str.strip() != ""
    by_text = pd.Series(counts.to_numpy()[filled], index=text[filled]).groupby(level=0).sum()
    return by_text.astype("int64"), len(values) - int(by_text.sum())


def _blank_count(values: pd.Series) -> int:
    if kind_of(values.dtype) != "categorical":
        return int(values.isna().sum())
    return _category_counts(values)[1]


def _blank_share(values: pd.Series) -> float:
    return _blank_count(values) / len(values) if len(values) else np.nan


def _show(value: float, kind: str) -> str:
    if kind == "datetime":
        return str((pd.Timestamp("1970-01-01") + pd.Timedelta(days=float(value))).round("min"))
    return f"{value:.4g}"


def _prediction_columns(predictions: Any) -> dict[str, pd.Series]:
    """Name -> values of each prediction column (see :meth:`Profile.from_frame`)."""
    if predictions is None:
        return {}
    if isinstance(predictions, pd.DataFrame):
        probabilities = [col for col in predictions.columns if str(col).startswith("p_")]
        if probabilities:
            table = predictions[probabilities].rename(columns=lambda col: str(col)[2:])
        else:
            table = predictions[["predict"]] if "predict" in predictions.columns else predictions
    else:
        array = np.asarray(predictions)
        if array.ndim not in (1, 2):
            raise ValueError(f"predictions must be 1-D or 2-D, but got {array.shape=}")
        table = pd.DataFrame(array.reshape(len(array), -1))
    table = table.reset_index(drop=True)
    if table.shape[1] <= 2:  # one score, or two classes: the second's probability says it all
        return {"prediction": table.iloc[:, -1]}
    return {f"prediction:{col}": table[col] for col in table.columns}


def _names(rows: pd.DataFrame, psi: bool = False, most: int = 5) -> str:
    shown = [f"{row.feature} psi {row.psi:.2f}" if psi else str(row.feature) for row in rows.head(most).itertuples()]
    return ", ".join(shown) + (f", +{len(rows) - most} more" if len(rows) > most else "")


def _worst_first(table: pd.DataFrame) -> pd.DataFrame:
    rank = table["status"].map({status: i for i, status in enumerate(STATUSES)})
    order = table.assign(_rank=rank).sort_values(["_rank", "psi", "feature"], ascending=[True, False, True],
                                                 na_position="last", kind="stable")
    return order.drop(columns="_rank").reset_index(drop=True)
