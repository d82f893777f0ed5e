"""automl/drift.py on real tables: random halves do not drift; shifted, blanked, retyped, missing columns do."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from automl.data import load
from automl.drift import COLUMNS, SAMPLE_SIZE, Profile, compare, drifted, summary, write_drift_csv


def halves(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two random halves of ``frame``'s rows: the same distribution on both sides."""
    order = np.random.default_rng(seed).permutation(len(frame))
    return frame.iloc[order[: len(frame) // 2]], frame.iloc[order[len(frame) // 2:]].reset_index(drop=True)


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load("diabetes").frame


@pytest.fixture(scope="module")
def titanic() -> pd.DataFrame:
    return load("titanic").frame


def status(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["feature"], table["status"], strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_random_halves_do_not_drift(diabetes, titanic, seed):
    # Titanic keeps Name and Ticket (one value per passenger): rare categories pool as "other" on both sides.
    for frame, target in ((diabetes, "Outcome"), (titanic, "Survived")):
        reference, current = halves(frame, seed)
        table = compare(Profile.from_frame(reference, target=target), current)
        assert list(table.columns) == COLUMNS
        assert set(table["feature"]) == set(frame.columns) - {target}  # the target is no feature, nor "new"
        assert (table["status"] == "ok").all(), table
        assert drifted(table) == []
        assert summary(table) == f"0 of {frame.shape[1] - 1} features drifted"


def test_a_shifted_feature_drifts_and_no_other(diabetes):
    reference, current = halves(diabetes)
    current = current.assign(Glucose=current["Glucose"] + 40)
    table = compare(Profile.from_frame(reference, target="Outcome"), current)
    worst = table.iloc[0]
    assert (worst["feature"], worst["status"], worst["test"]) == ("Glucose", "drifted", "ks")
    assert worst["psi"] >= 0.2 and worst["p_value"] < 0.01
    assert "median" in worst["detail"] and "->" in worst["detail"]
    assert (table["status"].iloc[1:] == "ok").all()
    assert drifted(table) == ["Glucose"]
    assert summary(table) == f"1 of 8 features drifted (Glucose psi {worst['psi']:.2f})"


def test_a_small_batch_is_noisy_in_psi_but_not_called_drift(diabetes):
    reference, current = halves(diabetes)
    table = compare(Profile.from_frame(reference, target="Outcome"), current.head(30))
    noisy = table[table["psi"] >= 0.2]
    assert len(noisy) > 0  # PSI's noise floor at 30 rows is about bins / rows
    assert (table["status"] == "ok").all()
    assert noisy["detail"].str.contains("too few rows").all()


@pytest.mark.parametrize("blank", [np.nan, "", None])
def test_a_blank_column_is_blank(diabetes, blank):
    reference, current = halves(diabetes)
    current = current.assign(Insulin=pd.Series([blank] * len(current), dtype=object if blank == "" else None))
    table = compare(Profile.from_frame(reference, target="Outcome"), current)
    row = table.set_index("feature").loc["Insulin"]
    assert (row["status"], row["blank_share_reference"], row["blank_share_current"]) == ("blank", 0.0, 1.0)
    assert table.iloc[0]["feature"] == "Insulin"
    assert drifted(table) == ["Insulin"]
    assert summary(table) == "0 of 8 features drifted; 1 blank (Insulin)"


def test_some_more_blanks_drift_through_the_blank_test(diabetes):
    reference, current = halves(diabetes)
    current = current.assign(BMI=current["BMI"].mask(np.arange(len(current)) % 3 == 0))  # a third now blank
    row = compare(Profile.from_frame(reference, target="Outcome"), current).set_index("feature").loc["BMI"]
    assert (row["status"], row["test"]) == ("drifted", "chi2")  # the values that remain have not moved


def test_numbers_as_text_change_type_and_still_compare_as_numbers(diabetes, titanic):
    reference, current = halves(diabetes)
    as_text = current["BMI"].astype(str).where(np.arange(len(current)) % 10 > 0, "n/a")
    table = compare(Profile.from_frame(reference, target="Outcome"), current.assign(BMI=as_text))
    row = table.set_index("feature").loc["BMI"]
    assert row["status"] == "type_changed"
    assert row["detail"] == "numeric in the reference, categorical now (90% parse)"
    assert drifted(table) == ["BMI"] and "1 changed type (BMI)" in summary(table)

    reference, current = halves(titanic)
    codes = current.assign(Sex=(current["Sex"] == "male").astype("float32"))  # the reverse: categories as numbers
    row = compare(Profile.from_frame(reference, target="Survived"), codes).set_index("feature").loc["Sex"]
    assert (row["status"], row["kind"]) == ("type_changed", "categorical")


def test_a_missing_column_is_missing_and_an_extra_one_new(diabetes):
    reference, current = halves(diabetes)
    current = current.drop(columns="Age").assign(Clinic=["north", "south"] * (len(current) // 2))
    table = compare(Profile.from_frame(reference, target="Outcome"), current)
    assert list(table["status"][:2]) == ["missing", "new"]
    missing, new = table.iloc[0], table.iloc[1]
    assert missing["feature"] == "Age" and np.isnan(missing["psi"]) and np.isnan(missing["blank_share_current"])
    assert (new["feature"], new["kind"], new["blank_share_current"]) == ("Clinic", "categorical", 0.0)
    assert drifted(table) == ["Age"]  # a new column is news, not a problem
    assert summary(table) == "0 of 8 features drifted; 1 missing (Age); 1 new (Clinic)"


def test_a_categorical_shift_drifts(titanic):
    reference, current = halves(titanic)
    male = (current["Sex"] == "male").to_numpy()
    rng = np.random.default_rng(0)
    # Resample the half so that the shares of men and women swap (65/35 -> 35/65).
    rows = np.concatenate([rng.choice(np.flatnonzero(male), 156), rng.choice(np.flatnonzero(~male), 290)])
    table = compare(Profile.from_frame(reference, target="Survived"), current.iloc[rows])
    row = table.set_index("feature").loc["Sex"]
    assert (row["status"], row["kind"], row["test"]) == ("drifted", "categorical", "chi2")
    assert row["detail"].startswith("'male' 6") and row["detail"].endswith("-> 35%")
    assert table.iloc[0]["feature"] == "Sex"  # the biggest shift; what travels with sex may drift too


def test_predictions_drift_when_the_rows_shift(diabetes):
    reference, current = halves(diabetes)
    features = [c for c in diabetes.columns if c != "Outcome"]
    model = LogisticRegression(max_iter=1000).fit(reference[features], reference["Outcome"])
    profile = Profile.from_frame(reference, target="Outcome", predictions=model.predict_proba(reference[features]))
    assert [p.name for p in profile.predictions] == ["prediction"]  # two classes: the positive one's probability

    same = compare(profile, current, predictions=model.predict_proba(current[features])[:, 1])
    assert status(same)["prediction"] == "ok"
    shifted = current.assign(Glucose=current["Glucose"] + 40)
    table = compare(profile, shifted, predictions=model.predict_proba(shifted[features]))
    row = table.set_index("feature").loc["prediction"]
    assert (row["role"], row["status"]) == ("prediction", "drifted")
    assert drifted(table) == ["Glucose", "prediction"]
    assert summary(table).endswith(f"; predictions psi {row['psi']:.2f} (drifted)")
    assert "prediction" not in status(compare(profile, shifted))  # no predictions given: none compared


def test_class_probabilities_are_compared_per_class():
    iris = load_iris(as_frame=True)
    x, y = iris.data, iris.target.map(dict(enumerate(iris.target_names)))
    model = LogisticRegression(max_iter=1000).fit(x, y)

    def probabilities(rows: pd.DataFrame) -> pd.DataFrame:  # a model's predict() frame: predict and p_<class>
        return pd.DataFrame(model.predict_proba(rows), columns=[f"p_{c}" for c in model.classes_]).assign(
            predict=model.predict(rows))

    profile = Profile.from_frame(x, predictions=probabilities(x))
    assert [p.name for p in profile.predictions] == [f"prediction:{c}" for c in model.classes_]
    virginica = x[(y == "virginica").to_numpy()].reset_index(drop=True)
    table = compare(profile, virginica, predictions=probabilities(virginica))
    statuses = status(table)
    assert statuses["prediction:virginica"] == statuses["prediction:setosa"] == "drifted"
    assert "predictions psi" in summary(table) and "prediction:" in summary(table)


def test_dates_compare_as_dates(diabetes):
    # A visit date per row, from the real ages, so that the dates follow a real distribution.
    dated = diabetes.assign(Visit=pd.Timestamp("2024-01-01") + pd.to_timedelta(diabetes["Age"] * 7, unit="D"))
    reference, current = halves(dated)
    profile = Profile.from_frame(reference, target="Outcome")
    assert {p.name: p.kind for p in profile.features}["Visit"] == "datetime"
    assert status(compare(profile, current))["Visit"] == "ok"
    later = status(compare(profile, current.assign(Visit=current["Visit"] + pd.Timedelta(days=365))))
    assert later["Visit"] == "drifted"
    as_text = compare(profile, current.assign(Visit=current["Visit"].dt.strftime("%Y-%m-%d")))
    assert as_text.set_index("feature").loc["Visit", "detail"].startswith("datetime in the reference, categorical")


def test_a_profile_round_trips_through_json(diabetes, titanic, tmp_path):
    for frame, target in ((diabetes, "Outcome"), (titanic, "Survived")):
        reference, current = halves(frame)
        profile = Profile.from_frame(reference, target=target, predictions=reference.iloc[:, 0].to_numpy())
        current = current.assign(**{current.columns[1]: current.iloc[:, 1].iloc[::-1].to_numpy()})
        predictions = current.iloc[:, 0].to_numpy()
        profile.save(tmp_path / "profile.json")
        again = Profile.load(tmp_path / "profile.json")
        assert again == Profile.from_json(profile.to_json()) == profile
        pd.testing.assert_frame_equal(compare(again, current, predictions), compare(profile, current, predictions))
    with pytest.raises(ValueError, match="not a drift profile"):
        Profile.from_json(json.dumps({"rows": 3}))


def test_the_csv_reads_back(diabetes, tmp_path):
    reference, current = halves(diabetes)
    table = compare(Profile.from_frame(reference, target="Outcome"), current.rename(columns={"BMI": "=BMI"}))
    write_drift_csv(table, tmp_path / "drift.csv")
    back = pd.read_csv(tmp_path / "drift.csv", keep_default_na=False)
    assert list(back.columns) == COLUMNS and len(back) == len(table)
    assert "'=BMI" in set(back["feature"])  # guarded against spreadsheet formulas
    assert list(back["status"]) == list(table["status"])


def test_a_large_table_profiles_into_a_small_profile(diabetes):
    rng = np.random.default_rng(1)

    def resampled(rows: int) -> pd.DataFrame:  # jittered, so every value is distinct: the largest profile
        frame = diabetes.iloc[rng.integers(0, len(diabetes), rows)].reset_index(drop=True)
        return frame + rng.normal(0, 0.01, frame.shape).astype("float32") * (frame.columns != "Outcome")

    profile = Profile.from_frame(resampled(200_000), target="Outcome")
    size = len(profile.to_json())
    assert size < 200_000
    assert all(len(p.sample) == SAMPLE_SIZE and len(p.shares) <= 11 for p in profile.features)
    assert size < 1.1 * len(Profile.from_frame(resampled(20_000), target="Outcome").to_json())
    current = resampled(200_000)
    table = compare(profile, current)
    assert (table["status"] == "ok").all() and (table["psi"] < 0.01).all()
    # A trivial shift (a sixth of a standard deviation) is certain at this size, but too small to call drift.
    glucose = compare(profile, current.assign(Glucose=current["Glucose"] + 5)).set_index("feature").loc["Glucose"]
    assert glucose["p_value"] < 1e-6 and glucose["psi"] < 0.1 and glucose["status"] == "ok"


def test_bad_input_says_what_is_wrong(diabetes):
    profile = Profile.from_frame(diabetes, target="Outcome")
    with pytest.raises(ValueError, match="drift needs rows"):
        compare(profile, diabetes.iloc[:0])
    with pytest.raises(ValueError, match=r"unique, but got twice=\['BMI'\]"):
        compare(profile, pd.concat([diabetes, diabetes["BMI"]], axis=1))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        compare(profile, diabetes, predictions=np.zeros((3, 2, 2)))
