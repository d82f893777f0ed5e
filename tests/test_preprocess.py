"""Preprocess: schema and task inference, card rules, and pipelines fitted on training rows only."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from automl.data import Dataset, DatasetCard, from_frame, load
from automl.errors import InputError
from automl.models import GradientBoosting
from automl.preprocess import (
    MIN_ROWS,
    CleanFrame,
    ConditionalImputer,
    DatetimeParts,
    MissingFlags,
    encode_target,
    infer_schema,
    make_preprocessor,
)

REPO = Path(__file__).resolve().parents[1]
TITANIC_CSV = str(REPO / "datasets" / "titanic.csv")
TITANIC_NUMERIC = ["Pclass", "Age", "SibSp", "Parch", "Fare"]
ZERO_MEANS_MISSING = ["Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI"]


@pytest.fixture(scope="module")
def diabetes() -> Dataset:
    return load("diabetes")


@pytest.fixture(scope="module")
def titanic() -> Dataset:
    return load("titanic")


def _dataset(frame: pd.DataFrame, target: str, task: str | None = None) -> Dataset:
    return Dataset(frame, DatasetCard(name="t", target=target, task=task), "t.csv", "0")


def _fitted_scaler(pipeline):
    """The numeric scaler of a fitted :func:`make_preprocessor` pipeline."""
    return pipeline.named_steps["columns"].named_transformers_["numeric"].named_transformers["values"]


def _fitted_indicator(pipeline):
    """The numeric columns' missing indicator of a fitted :func:`make_preprocessor` pipeline."""
    return pipeline.named_steps["columns"].named_transformers_["numeric"].named_transformers["missing"]


# -- schema ---------------------------------------------------------------------------------------
def test_titanic_schema_from_the_card(titanic):
    schema = infer_schema(titanic)
    assert schema.task == "binary" and schema.target == "Survived" and schema.classes == [0, 1]
    assert schema.numeric == TITANIC_NUMERIC
    assert schema.categorical == ["Sex", "Embarked"]
    assert {c: schema.dropped[c] for c in ("PassengerId", "Name", "Ticket")} == dict.fromkeys(
        ("PassengerId", "Name", "Ticket"), "dropped by the dataset card")
    assert schema.filled == ["Cabin"]  # 147 cabins for 204 filled rows: only whether it is filled is kept
    assert set(schema.dropped) == {"PassengerId", "Name", "Ticket"}
    assert schema.features == [*TITANIC_NUMERIC, "Sex", "Embarked", "Cabin"]


def test_titanic_schema_from_a_plain_file():
    schema = infer_schema(load(TITANIC_CSV, target="Survived"))
    assert schema.task == "binary" and schema.classes == [0, 1]
    assert schema.dropped["PassengerId"] == "a row identifier"
    for col in ("Name", "Ticket"):
        assert schema.dropped[col].startswith("free text or a code"), col
    assert set(schema.dropped) == {"PassengerId", "Name", "Ticket"} and schema.filled == ["Cabin"]
    assert schema.numeric == TITANIC_NUMERIC
    assert schema.categorical == ["Sex", "Embarked"]
    assert schema.zero_means_missing == []


def test_diabetes_schema_keeps_the_card_rules(diabetes):
    schema = infer_schema(diabetes)
    assert schema.numeric == [c for c in diabetes.frame.columns if c != "Outcome"]
    assert schema.categorical == [] and schema.dropped == {}
    assert schema.zero_means_missing == ZERO_MEANS_MISSING
    assert schema.to_json()["zero_means_missing"] == ZERO_MEANS_MISSING


def test_single_value_and_numbers_as_text_columns():
    frame = pd.DataFrame({"const": ["a"] * 40, "as_text": [str(i % 7) for i in range(40)],
                          "y": [0, 1] * 20, "x": np.linspace(0, 1, 40)})
    schema = infer_schema(_dataset(frame, "y"))
    assert schema.dropped == {"const": "a single value"}
    assert schema.numeric == ["as_text", "x"]


@pytest.mark.parametrize(("source", "target", "task", "classes"), [
    ("diabetes", None, "binary", [0, 1]),
    (TITANIC_CSV, "Pclass", "multiclass", [1, 2, 3]),          # few integer values
    (TITANIC_CSV, "Embarked", "multiclass", ["C", "Q", "S"]),  # text labels
    (TITANIC_CSV, "Fare", "regression", []),                   # many real values
    ("diabetes-progression", None, "regression", []),
])
def test_task_inference(source, target, task, classes):
    ds = load(source, target=target)
    schema = infer_schema(ds)
    assert schema.task == task and schema.classes == classes
    assert target not in schema.features


def test_many_integer_values_are_a_regression():
    ds = load("diabetes-progression")
    ds = Dataset(ds.frame, DatasetCard(name="p", target="target"), ds.source, ds.fingerprint)
    assert infer_schema(ds).task == "regression"  # integer-valued target, but 200+ distinct values


def test_task_overrides_that_do_not_fit_the_target():
    with pytest.raises(InputError, match="task 'binary' but target 'Pclass' has 3 classes"):
        infer_schema(load(TITANIC_CSV, target="Pclass", task="binary"))
    with pytest.raises(InputError, match="'regression' needs a numeric target, but 'Sex'"):
        infer_schema(load(TITANIC_CSV, target="Sex", task="regression"))


def test_encode_target_follows_the_class_order():
    schema = infer_schema(load(TITANIC_CSV, target="Embarked"))
    y = pd.Series(["S", "C", "Q", "S"])
    np.testing.assert_array_equal(encode_target(schema, y), [2, 0, 1, 2])
    regression = infer_schema(load("diabetes-progression"))
    assert encode_target(regression, pd.Series([1, 2])).dtype == np.float64


# -- card rules -----------------------------------------------------------------------------------
def test_zero_means_missing_for_glucose_not_pregnancies(diabetes):
    schema = infer_schema(diabetes)
    x = diabetes.frame[schema.features]
    assert (x["Glucose"] == 0).any() and (x["Pregnancies"] == 0).any()
    clean = CleanFrame(schema.numeric, schema.categorical, schema.zero_means_missing).fit_transform(x)
    assert clean["Glucose"].isna().sum() == (x["Glucose"] == 0).sum()
    assert not (clean["Glucose"] == 0).any()
    assert clean["Pregnancies"].isna().sum() == 0
    assert (clean["Pregnancies"] == 0).sum() == (x["Pregnancies"] == 0).sum()


def test_zeros_are_missing_values_imputed_from_the_rest_of_the_row(diabetes):
    schema = infer_schema(diabetes)
    x = diabetes.frame[schema.features]
    pipeline = make_preprocessor(schema).fit(x)
    # Scaled by the measured values only: a zero that means "not measured" counts in neither mean nor spread.
    stats = dict(zip(schema.numeric, _fitted_scaler(pipeline).mean_, strict=True))
    glucose = x["Glucose"].astype("float64")
    assert stats["Glucose"] == pytest.approx(glucose[glucose != 0].mean(), rel=1e-6)
    insulin = x["Insulin"].astype("float64")
    assert stats["Insulin"] == pytest.approx(insulin[insulin != 0].mean(), rel=1e-6) != insulin.mean()
    assert stats["Pregnancies"] == pytest.approx(x["Pregnancies"].astype("float64").mean(), rel=1e-6)
    # Missing indicators exist for the zero-means-missing columns with zeros in 5 rows or more (Glucose has 5),
    # not for Pregnancies.
    flagged = [schema.numeric[i] for i in _fitted_indicator(pipeline).features_]
    assert "Pregnancies" not in flagged
    assert set(flagged) == {c for c in ZERO_MEANS_MISSING if (x[c] == 0).sum() >= MIN_ROWS} == set(ZERO_MEANS_MISSING)
    out = pipeline.transform(x)
    assert out.shape == (len(x), len(schema.numeric) + len(flagged))
    assert np.isfinite(out).all()
    # The indicators stay 0/1, unscaled: 1 where the card made a zero missing.
    np.testing.assert_array_equal(out[:, len(schema.numeric):], (x[flagged] == 0).to_numpy())
    # An unmeasured insulin (half the rows) is what the row's other values make likely, not one mean for all:
    # measured insulin rises with glucose, and so do the imputed values.
    unmeasured = (insulin == 0).to_numpy() & (glucose != 0).to_numpy()
    imputed = out[unmeasured, schema.numeric.index("Insulin")]
    assert imputed.std() > 0.1
    assert np.corrcoef(imputed, glucose[unmeasured])[0, 1] > 0.5


def test_a_missing_number_is_imputed_from_the_row_s_categories(titanic):
    """Titanic's missing ages: first-class passengers were older (38 on average, third class 25), and so are the
    ages imputed for them."""
    schema = infer_schema(titanic)
    x = titanic.frame[schema.features]
    out = make_preprocessor(schema).fit(x).transform(x)
    age = out[:, schema.numeric.index("Age")]
    unknown = x["Age"].isna().to_numpy()
    first, third = (unknown & (x["Pclass"] == k).to_numpy() for k in (1, 3))
    assert first.sum() >= 20 and third.sum() >= 20
    assert age[first].mean() > age[third].mean() + 0.5  # in standard deviations of the measured ages


def test_a_row_with_nothing_measured_takes_its_group_s_expected_values():
    """Penguins' test row with no measurements, in small: at the mean of every number it would look like neither
    species; imputed from its island it looks like that island's commonest species."""
    rng = np.random.default_rng(0)
    island = np.repeat(["Biscoe", "Dream"], 60)
    big = np.r_[rng.random(60) < 0.75, rng.random(60) < 0.1]  # Biscoe's are mostly the big species
    size = np.where(big, 50.0, 40.0) + rng.normal(0, 1, 120)
    frame = pd.DataFrame({"island": island, "length": size, "mass": size * 100 + rng.normal(0, 300, 120),
                          "big": big.astype(int)})
    frame.loc[0, ["length", "mass"]] = np.nan  # the one training row without measurements, as in penguins
    ds = _dataset(frame, "big")
    schema = infer_schema(ds)
    pipeline = make_preprocessor(schema).fit(frame[schema.features])
    blank = pd.DataFrame({"island": ["Biscoe", "Dream"], "length": [np.nan] * 2, "mass": [np.nan] * 2})
    out = pipeline.transform(blank.astype({"island": frame["island"].dtype}))
    length = schema.numeric.index("length")
    scaled = lambda v: (v - frame["length"].mean()) / frame["length"].std(ddof=0)  # noqa: E731
    expected = [scaled(frame.loc[frame.island == i, "length"].mean()) for i in ("Biscoe", "Dream")]
    np.testing.assert_allclose(out[:, length], expected, atol=0.2)
    assert out[0, length] > 0.3 > -0.3 > out[1, length]  # mean imputation: 0 for both


def test_a_wide_table_regresses_only_the_columns_with_most_missing_cells():
    """help_baseline (756 incomplete columns) spent 8 s a fold in the imputer's 7,560 regressions."""
    from automl.preprocess import IMPUTE_COLUMNS

    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 1))
    x = base + 0.1 * rng.normal(size=(300, IMPUTE_COLUMNS + 40))
    x[:, 0] = base[:, 0]  # complete: every regression can read it
    for j in range(1, x.shape[1]):
        x[rng.choice(300, 5 + j % 50, replace=False), j] = np.nan  # column j misses 5 + j % 50 cells
    imputer = ConditionalImputer().fit(x)
    missing = np.isnan(x).sum(axis=0)
    assert len(imputer.mean_filled_) == x.shape[1] - 1 - IMPUTE_COLUMNS
    # The columns left to their mean are those with the fewest missing cells.
    assert missing[imputer.mean_filled_].max() <= np.sort(missing[1:])[::-1][:IMPUTE_COLUMNS].min()
    out = imputer.transform(x)
    assert np.isfinite(out).all()
    gaps = np.isnan(x)
    regressed = np.setdiff1d(np.arange(1, x.shape[1]), imputer.mean_filled_)
    assert (out[:, imputer.mean_filled_][gaps[:, imputer.mean_filled_]] == 0).all()
    # A regressed column's gaps follow the row's other columns, far better than the mean would.
    error = np.abs(out[:, regressed] - base)[gaps[:, regressed]]
    assert error.mean() < 0.5 * np.abs(base[:, 0]).mean()


def test_a_column_missing_in_fewer_than_five_training_rows_gets_no_flag():
    x = np.arange(40.0).reshape(20, 2)
    x[:4, 0] = np.nan  # 4 rows: imputed, not flagged
    x[:5, 1] = np.nan  # 5 rows: flagged
    flags = MissingFlags().fit(x)
    assert list(flags.features_) == [1]
    np.testing.assert_array_equal(flags.transform(x)[:, 0], [1.0] * 5 + [0.0] * 15)
    assert flags.transform(np.full((2, 2), np.nan)).tolist() == [[1.0], [1.0]]


# -- no leakage -------------------------------------------------------------------------------------
def test_preprocessor_learns_from_training_rows_only(diabetes):
    schema = infer_schema(diabetes)
    x = diabetes.frame[schema.features]
    train, test = train_test_split(x, test_size=0.3, random_state=0, stratify=diabetes.frame["Outcome"])
    pipeline = make_preprocessor(schema).fit(train)
    scaler = _fitted_scaler(pipeline)

    def measured(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({c: (rows[c].mask(rows[c] == 0) if c in ZERO_MEANS_MISSING else rows[c]).astype("float64")
                             for c in schema.numeric})

    np.testing.assert_allclose(scaler.mean_, measured(train).mean(), rtol=1e-6)
    np.testing.assert_allclose(scaler.scale_, measured(train).std(ddof=0), rtol=1e-5)
    # ... and not from the full table, which would leak the test rows.
    assert not np.allclose(scaler.mean_, measured(x).mean())
    assert not np.allclose(scaler.scale_, measured(x).std(ddof=0))
    # The imputer's regressions too: refitted on the full table they would impute the test rows otherwise.
    columns, imputer = pipeline[:-1], pipeline[-1]
    leaky = ConditionalImputer().fit(columns.transform(x))
    assert not np.allclose(imputer.transform(columns.transform(test)), leaky.transform(columns.transform(test)))
    # Transforming test rows changes nothing that was learnt.
    before = scaler.mean_.copy()
    pipeline.transform(test)
    np.testing.assert_array_equal(scaler.mean_, before)


def test_unseen_and_missing_categories_do_not_crash(titanic):
    schema = infer_schema(titanic)
    x = titanic.frame[schema.features]
    pipeline = make_preprocessor(schema).fit(x)
    width = pipeline.transform(x.head(3)).shape[1]
    odd = x.head(3).copy()
    odd["Sex"] = ["unknown", None, "female"]
    odd["Embarked"] = ["Z", "Q", np.nan]
    odd["Fare"] = ["12.5", None, "oops"]  # text in a numeric column becomes missing, then imputed
    out = pipeline.transform(odd)
    assert out.shape == (3, width)
    assert np.isfinite(out).all()


def test_trees_get_native_categories_and_missing_numbers(titanic):
    schema = infer_schema(titanic)
    x = titanic.frame[schema.features]
    pipeline = make_preprocessor(schema, "trees").fit(x)
    out = pipeline.transform(x)
    assert list(out.columns) == schema.numeric + schema.filled + schema.categorical  # one per feature, no one-hot
    assert all(isinstance(out[c].dtype, pd.CategoricalDtype) for c in schema.categorical)
    assert out["Age"].isna().sum() == x["Age"].isna().sum()  # LightGBM handles missing numbers itself
    odd = x.head(3).copy()
    odd["Sex"] = ["unknown", None, "female"]  # an unseen level is missing, like a missing one
    coded = pipeline.transform(odd)
    assert coded["Sex"].isna().tolist() == [True, True, False]
    assert list(coded["Sex"].cat.categories) == list(out["Sex"].cat.categories)
    y = encode_target(schema, titanic.frame[titanic.target])
    gbm = GradientBoosting("binary", n_jobs=1).fit(out, y)
    assert gbm.booster_.pandas_categorical is not None  # LightGBM split on the categories natively
    assert gbm.predict_proba(coded).shape == (3, 2)


def test_column_order_and_extra_columns_do_not_matter(titanic):
    schema = infer_schema(titanic)
    frame = titanic.frame
    pipeline = make_preprocessor(schema).fit(frame[schema.features])
    expected = pipeline.transform(frame[schema.features])
    shuffled = frame[list(reversed(frame.columns))]  # raw rows: target and dropped columns too
    np.testing.assert_allclose(pipeline.transform(shuffled), expected)


# -- dates ------------------------------------------------------------------------------------------
KNOWN_DATES = ["2024-02-29 13:45", "2023-12-31 08:00", "2013-01-01 23:59"]  # a Thursday, a Sunday, a Tuesday
KNOWN_PARTS = [[2024, 2, 29, 3, 13], [2023, 12, 31, 6, 8], [2013, 1, 1, 1, 23]]  # year, month, day, weekday, hour


def _dated(tmp_path: Path, when: list[str], n: int = 60) -> Dataset:
    """A CSV with a date-time column (``when`` repeated), read by :func:`load` like any file."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"when": (when * n)[:n], "x": rng.normal(size=n), "y": [0, 1] * (n // 2)})
    frame.to_csv(tmp_path / "dated.csv", index=False)
    return load(str(tmp_path / "dated.csv"), target="y")


@pytest.mark.parametrize("when", [KNOWN_DATES, ["29/02/2024 13:45", "31/12/2023 08:00", "01/01/2013 23:59"]])
def test_date_text_becomes_year_month_day_weekday_hour(tmp_path, when):
    ds = _dated(tmp_path, when)
    schema = infer_schema(ds)
    assert schema.datetime == ["when"] and "when" not in schema.categorical + schema.numeric + list(schema.dropped)
    assert schema.features == ["x", "when"] and schema.to_json()["datetime"] == ["when"]
    parts = DatetimeParts().fit(ds.frame[["when"]])
    assert parts.parts_ == {"when": ["year", "month", "day", "day_of_week", "hour"]}
    out = parts.transform(ds.frame[["when"]].head(3))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, KNOWN_PARTS)


def test_dates_without_times_get_no_hour_and_bad_dates_are_imputed(tmp_path):
    ds = _dated(tmp_path, ["2024-02-29", "2023-12-31", "2013-01-01"])
    parts = DatetimeParts().fit(ds.frame[["when"]])
    assert parts.parts_ == {"when": ["year", "month", "day", "day_of_week"]}
    raw = pd.DataFrame({"when": ["2023-12-31", "not a date", None]})
    np.testing.assert_array_equal(parts.transform(raw), [[2023, 12, 31, 6], *[[np.nan] * 4] * 2])
    pipeline = make_preprocessor(infer_schema(ds)).fit(ds.frame)
    out = pipeline.transform(raw.assign(x=0.0))
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_parquet_timestamps_are_dates_too(tmp_path):
    frame = pd.DataFrame({"when": pd.to_datetime(KNOWN_DATES * 20), "x": np.arange(60.0) % 7, "y": [0, 1] * 30})
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    ds = load(str(tmp_path / "t.parquet"), target="y")
    schema = infer_schema(ds)
    assert schema.datetime == ["when"] and schema.numeric == ["x"]
    columns = make_preprocessor(schema).fit(ds.frame).named_steps["columns"]
    parts = columns.named_transformers_["datetime"].named_steps["parts"]
    np.testing.assert_array_equal(parts.transform(ds.frame[["when"]].head(3)), KNOWN_PARTS)


def test_fitted_preprocessor_reads_raw_text_dates_after_pickling(tmp_path):
    ds = _dated(tmp_path, KNOWN_DATES)
    schema = infer_schema(ds)
    pipeline = make_preprocessor(schema).fit(ds.frame)
    raw = pd.read_csv(tmp_path / "dated.csv", dtype={"when": object})  # plain text, as predict rows arrive
    restored = pickle.loads(pickle.dumps(pipeline))
    np.testing.assert_allclose(restored.transform(raw), pipeline.transform(ds.frame), rtol=1e-6)


def test_mixed_numbers_and_dates_are_dropped_with_a_reason(tmp_path):
    ds = _dated(tmp_path, ["2024-02-29", "17", "2013-01-01", "4"])
    schema = infer_schema(ds)
    assert schema.dropped["when"] == "mixed numbers (30 cells) and dates (30 cells); keep one kind per column"
    assert schema.features == ["x"]


def test_month_names_and_codes_are_not_dates(tmp_path):
    frame = pd.DataFrame({"month": ["Jan", "Feb", "Mar"] * 20, "code": ["A1", "B2", "C3"] * 20,
                          "x": np.arange(60.0), "y": [0, 1] * 30})
    schema = infer_schema(from_frame(frame, "t", target="y"))
    assert schema.categorical == ["month", "code"] and schema.datetime == []


def test_an_often_blank_code_becomes_whether_it_is_filled():
    rng = np.random.default_rng(0)
    n = 400
    filled = rng.random(n) < 0.3
    frame = pd.DataFrame({"note": [f"text {i}" if f else None for i, f in enumerate(filled)],
                          "rare": [None if i == 0 else f"id {i}" for i in range(n)],  # blank once: no signal
                          "x": rng.normal(size=n), "y": filled.astype(int)})
    schema = infer_schema(from_frame(frame, "t", target="y"))
    assert schema.filled == ["note"] and schema.dropped["rare"].startswith("free text or a code")
    x = frame[schema.features]
    dense = make_preprocessor(schema).fit(x).transform(x)
    assert any(np.array_equal(column, filled) for column in dense.T)  # 0/1, unscaled like the missing flags
    trees = make_preprocessor(schema, "trees").fit(x).transform(x)
    np.testing.assert_array_equal(trees["note"].to_numpy(), filled.astype("float32"))
    unseen = pd.DataFrame({"note": ["never seen", None], "x": [0.0, 0.0]})
    np.testing.assert_array_equal(make_preprocessor(schema, "trees").fit(x).transform(unseen)["note"], [1.0, 0.0])


# -- compact dtypes ---------------------------------------------------------------------------------
def test_float32_numbers_and_categorical_text_flow_through(titanic):
    assert titanic.frame["Age"].dtype == np.float32 and titanic.frame["Sex"].dtype == "category"
    schema = infer_schema(titanic)
    out = make_preprocessor(schema).fit(titanic.frame).transform(titanic.frame)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_consecutive_integers_read_as_float32_are_still_a_row_identifier():
    frame = pd.DataFrame({"row": np.arange(1, 41), "x": np.linspace(0, 1, 40) ** 2, "y": [0, 1] * 20})
    ds = from_frame(frame, "t", target="y")
    assert ds.frame["row"].dtype == np.float32
    assert infer_schema(ds).dropped == {"row": "a row identifier"}


def test_dense_width_is_the_width_of_the_dense_matrix():
    """The reference stage costs the GLM and the forests on it: 35 raw columns of the synthetic table are 280."""
    from automl.preprocess import dense_width

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=1000), "b": rng.normal(size=1000),
                          "c": rng.choice(["x", "y", "z"], 1000),
                          "d": pd.Categorical([f"l{i}" for i in rng.integers(0, 100, 1000)]),
                          "y": rng.integers(0, 2, 1000)})
    schema = infer_schema(from_frame(frame, "width", "y"))
    x = frame.drop(columns=["y"])
    width = make_preprocessor(schema).fit_transform(x, frame["y"].to_numpy()).shape[1]
    # One-hot columns stop at MAX_ONEHOT; a column of more levels adds its target encoding.
    assert dense_width(x, schema) == width == 2 + 3 + 64 + 1


def _coded_table(signal: bool, n: int = 3000, levels: int = 600, seed: int = 0) -> pd.DataFrame:
    """A noise number and a code of ``levels`` levels (~5 rows each): each level with its own positive rate
    (``signal``), or one rate for all (pure noise)."""
    rng = np.random.default_rng(seed)
    code = rng.integers(0, levels, n)
    rate = rng.beta(1, 3, levels) if signal else np.full(levels, 0.3)
    return pd.DataFrame({"num": rng.normal(size=n), "code": [f"c{i}" for i in code],
                         "y": (rng.random(n) < rate[code]).astype(int)})


@pytest.mark.parametrize("signal, low, high", [(False, 0.45, 0.55), (True, 0.63, 1.0)])
def test_many_level_codes_are_target_encoded_inside_each_fold(signal, low, high):
    """A code of 600 levels: one-hot keeps 64, target encoding the rest. Fitted on each fold's training rows
    only, a pure-noise code stays at AUC ≈ 0.5 out of fold (an encoder fitted on all rows first gives 0.77
    here), and a code whose levels differ is learnt (0.68 measured)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from automl.evaluation import cross_validate, make_protocol
    from automl.models import Candidate

    frame = _coded_table(signal)
    schema = infer_schema(from_frame(frame, "codes", "y"))
    x, y = frame.drop(columns=["y"]), encode_target(schema, frame["y"])
    assert schema.categorical == ["code"]
    glm = Candidate("GLM_1", "GLM", lambda: LogisticRegression(max_iter=500), {})
    result = cross_validate(glm, x, y, schema, make_protocol(y, "binary", "cv", 5, seed=0).folds)
    assert low < roc_auc_score(y, result.oof[:, 1]) < high


def test_training_rows_get_cross_fitted_target_encodings():
    """A training row's encoding must not include its own target: on a pure-noise code the encodings that
    ``fit_transform`` gives the training rows do not predict them (0.50), those of a plain fit do (0.77)."""
    from sklearn.metrics import roc_auc_score

    frame = _coded_table(signal=False)
    schema = infer_schema(from_frame(frame, "codes", "y"))
    x, y = frame.drop(columns=["y"]), encode_target(schema, frame["y"])
    pipeline = make_preprocessor(schema)
    cross_fitted = pipeline.fit_transform(x, y)[:, -1]
    assert abs(roc_auc_score(y, cross_fitted) - 0.5) < 0.05
    assert roc_auc_score(y, pipeline.transform(x)[:, -1]) > 0.7  # why cross-fitting is needed
    with pytest.raises(ValueError, match="needs the target"):
        make_preprocessor(schema).fit(x)


def test_many_level_codes_get_one_encoding_per_class_when_multiclass():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"num": rng.normal(size=900), "code": [f"c{i}" for i in rng.integers(0, 200, 900)],
                          "y": rng.choice(["a", "b", "c"], 900)})
    schema = infer_schema(from_frame(frame, "codes", "y"))
    x, y = frame.drop(columns=["y"]), encode_target(schema, frame["y"])
    out = make_preprocessor(schema).fit(x, y).transform(x.iloc[:5])
    assert out.shape == (5, 1 + 64 + 3) and out.dtype == np.float32


def test_a_date_part_does_not_replace_a_column_of_its_name():
    # A date "d" makes "d_year", "d_month", …: beside a column "d_year" the part once silently replaced it.
    rng = np.random.default_rng(0)
    n = 120
    dates = pd.Series(pd.date_range("2001-01-01", periods=n, freq="45D")).dt.strftime("%Y-%m-%d")
    frame = pd.DataFrame({"d": dates, "d_year": rng.normal(size=n), "d_month": rng.choice(["a", "b", "c"], n),
                          "d_day": rng.normal(size=n), "d_day_": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    schema = infer_schema(from_frame(frame, "dates", target="y"))
    assert schema.datetime == ["d"] and schema.categorical == ["d_month"]
    x = frame.drop(columns="y")
    trees = make_preprocessor(schema, "trees").fit(x).transform(x)
    assert list(trees.columns) == ["d_year", "d_day", "d_day_", "d_year_", "d_month_", "d_day__", "d_day_of_week",
                                   "d_month"]
    for col in ("d_year", "d_day", "d_day_"):  # the user's columns, whole
        np.testing.assert_allclose(trees[col], frame[col].astype("float32"))
    assert list(trees["d_month"].astype(str)) == list(frame["d_month"])
    parsed = pd.to_datetime(dates)
    for name, part in (("d_year_", "year"), ("d_month_", "month"), ("d_day__", "day")):
        np.testing.assert_array_equal(trees[name], getattr(parsed.dt, part))
