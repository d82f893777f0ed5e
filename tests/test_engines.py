"""The Optuna engine: failed trials are recorded and the search goes on; limits and resume."""

from __future__ import annotations

import numpy as np

from automl import data
from automl.budget import Budget
from automl.engines import SearchData
from automl.engines.optuna_engine import search
from automl.evaluation import holdout_split
from automl.events import EventLog
from automl.metrics import get
from automl.preprocess import encode_target, infer_schema, make_preprocessor
from automl.spaces import Choice, Float, Int


def _search_data() -> SearchData:
    ds = data.load("diabetes")
    schema = infer_schema(ds)
    x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    train, val = holdout_split(y, "binary", 0.2, seed=0)
    pre = make_preprocessor(schema).fit(x.iloc[train])
    return SearchData(pre.transform(x.iloc[train]).astype("float32"), y[train],
                      pre.transform(x.iloc[val]).astype("float32"), y[val], "binary", 2)


# A tiny space in which half the activations do not exist: those trials must fail cleanly.
SPACE = (Int("n_layers", 1, 1), Choice("units", (8,)), Choice("activation", ("relu", "no-such-activation")),
         Float("dropout", 0.0, 0.0), Choice("batch_norm", (False,)), Float("l2", 1e-5, 1e-5),
         Float("learning_rate", 1e-2, 1e-2), Choice("optimizer", ("adam",)), Choice("batch_size", (64,)))


def _run(tmp_path, max_trials: int, warm=()):
    return search(SPACE, _search_data(), get("auc", "binary"), Budget(120), max_trials=max_trials, seed=3,
                  storage_dir=tmp_path, study_name="t", warm_starts=warm, refit_trials=0, finish_seconds=0,
                  keep_share=0.0, events=EventLog(verbose=False), max_epochs=10)


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path):
    bad = {"n_layers": 1, "units": 8, "activation": "no-such-activation", "dropout": 0.0, "batch_norm": False,
           "l2": 1e-5, "learning_rate": 1e-2, "optimizer": "adam", "batch_size": 64}
    records = _run(tmp_path, max_trials=4, warm=(bad, dict(bad, activation="relu")))
    assert len(records) == 4
    failed = [r for r in records if r.state == "FAIL"]
    assert failed and all("no-such-activation" in r.error for r in failed)
    assert records[0].state == "FAIL"  # the first trial failed ...
    assert any(r.state == "COMPLETE" and np.isfinite(r.value) for r in records)  # ... and the search went on


def test_resume_continues_the_same_study(tmp_path):
    first = _run(tmp_path, max_trials=2)
    again = _run(tmp_path, max_trials=3)  # the limit counts trials of the study, old ones included
    assert [r.number for r in again] == [0, 1, 2]
    assert [r.params for r in again[:2]] == [r.params for r in first]


def test_tensorboard_logs_each_trials_validation_curve(tmp_path):
    from dataclasses import replace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = replace(_search_data(), log_dir=str(tmp_path / "tb"))
    records = search(SPACE[:2] + (Choice("activation", ("relu",)),) + SPACE[3:], data, get("auc", "binary"),
                     Budget(120), max_trials=2, seed=3, storage_dir=tmp_path, study_name="tb", warm_starts=(),
                     refit_trials=0, finish_seconds=0, keep_share=0.0, events=EventLog(verbose=False), max_epochs=10)
    for record in records:
        events = EventAccumulator(str(tmp_path / "tb" / f"trial_{record.number}"), size_guidance={"tensors": 0})
        events.Reload()
        curve = events.Tensors("validation_auc")
        assert [e.step for e in curve] == [5, 10]
        assert "hyperparameters" in events.Tags()["tensors"]
