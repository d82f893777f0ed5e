"""flows/score.py and flows/notify.py: scoring with the champion, drift against its training rows, events and a
notification through a real webhook block — on the session's Prefect server, with a real retrained champion.

Prefect is imported inside tests and fixtures, after ``prefect_api`` has set the API URL.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, tree_digest

pytestmark = pytest.mark.usefixtures("prefect_api")

BUDGET = dict(max_runtime_secs=20, max_models=2, verbose=False, target="Outcome", project="pima")


@pytest.fixture(scope="module")
def pima(on_server, tmp_path_factory):
    """A champion retrained on 600 Pima rows (a CSV file), and the other 168 rows: (root, project dir, new rows)."""
    from flows.retrain import retrain_flow

    root = tmp_path_factory.mktemp("score")
    rows = pd.read_csv(REPO / "datasets" / "diabetes.csv").sample(frac=1.0, random_state=0).reset_index(drop=True)
    rows.iloc[:600].to_csv(root / "training.csv", index=False)
    retrain_flow(dataset=str(root / "training.csv"), output_root=str(root), options=BUDGET)
    return root, root / "pima", rows.iloc[600:].reset_index(drop=True)


def _events(name: str, project: str, since: float, match=lambda event: True) -> list:
    """The events called ``name`` about ``project`` since ``since`` that ``match`` (they reach the server
    asynchronously; the second of slack for clocks can let in the previous test's event, hence ``match``)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(
                id=[f"automl.project.{project}"])), limit=50)
        found = [e for e in page.events if e.occurred.timestamp() >= since - 1 and match(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_the_champion_profiles_its_training_rows(pima):
    _, project, _ = pima
    profile = json.loads((project / "champion" / "drift_profile.json").read_text())
    assert profile["rows"] == len(pd.read_csv(project.parent / "training.csv")) - int(pd.read_csv(
        project / "leaderboard_history.csv")["holdout_rows"].iloc[0])
    info = json.loads((project / "champion" / "champion.json").read_text())
    assert info["trained_on"]["rows"] == profile["rows"]
    history = pd.read_csv(project / "leaderboard_history.csv")
    assert history["rows"].iloc[0] == profile["rows"] and history["source"].iloc[0]
    assert (project / "history.html").read_text().count("<img") == 1  # the champion's score over time


def test_scoring_writes_stamped_predictions_and_sees_no_drift_in_rows_like_the_training_rows(pima):
    from flows.score import score_flow

    root, project, new = pima
    new.to_csv(root / "new.csv", index=False)
    since = time.time()
    result = score_flow(dataset=str(root / "new.csv"), project="pima", output_root=str(root),
                        options={"target": "Outcome"}, keep_columns=["Age"])
    preds = pd.read_csv(result["predictions"])
    assert len(preds) == len(new) == result["rows"]
    assert {"Age", "predict", "p_0", "p_1", "model_id", "champion", "scored_at"} <= set(preds.columns)
    assert preds["Age"].tolist() == new["Age"].tolist()
    assert (preds["champion"] == json.loads((project / "champion" / "champion.json").read_text())["champion"]).all()
    drift = pd.read_csv(next((project / "scores").glob("*-drift.csv")))
    features = drift[drift["role"] == "feature"]
    assert set(features["feature"]) == set(new.columns) - {"Outcome"}
    assert (features["status"] == "ok").all(), features
    assert not _events("automl.drift.detected", "pima", since)


def test_a_shifted_feature_is_flagged_alone_and_emits_the_drift_event(pima):
    from flows.score import score_flow

    root, project, new = pima
    shifted = new.assign(Glucose=new["Glucose"] + 40)
    shifted.to_csv(root / "shifted.csv", index=False)
    since = time.time()
    result = score_flow(dataset=str(root / "shifted.csv"), project="pima", output_root=str(root),
                        options={"target": "Outcome"})
    assert "Glucose" in result["drift"]
    drift = pd.read_csv(max((project / "scores").glob("*-drift.csv"), key=lambda p: p.stat().st_mtime))
    features = drift[drift["role"] == "feature"].set_index("feature")
    assert features.loc["Glucose", "status"] == "drifted"
    assert (features.drop(index="Glucose")["status"] == "ok").all(), features
    events = _events("automl.drift.detected", "pima", since)
    assert events and "Glucose" in events[0].payload["drifted"]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_drift_is_sent_through_a_configured_webhook_block(pima):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.score import score_flow

    root, _, new = pima
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        CustomWebhookNotificationBlock(name="ops", url=f"http://127.0.0.1:{server.server_port}/hook",
                                       json_data={"text": "{{subject}}: {{body}}"}).save("automl-ops", overwrite=True)
        new.assign(BMI=new["BMI"] * 2.2).to_csv(root / "bmi.csv", index=False)
        score_flow(dataset=str(root / "bmi.csv"), project="pima", output_root=str(root),
                   options={"target": "Outcome"}, notify="custom-webhook/automl-ops")
    finally:
        server.shutdown()
    assert len(_Hook.received) == 1 and "BMI" in _Hook.received[0]["text"] and "pima" in _Hook.received[0]["text"]


@pytest.mark.parametrize("change", ["drop_column", "new_class", "no_champion"])
def test_rows_the_champion_cannot_score_fail_the_run_with_one_line_and_touch_nothing(pima, change):
    from prefect.states import State

    from flows.score import score_flow

    root, project, new = pima
    rows = {"drop_column": new.drop(columns=["BMI"]), "new_class": new.assign(Outcome=np.where(new.index < 3, 7, 0)),
            "no_champion": new}[change]
    rows.to_csv(root / f"{change}.csv", index=False)
    before, since = tree_digest(project), time.time()
    state: State = score_flow(dataset=str(root / f"{change}.csv"), project="nobody" if change == "no_champion"
                              else "pima", output_root=str(root), options={"target": "Outcome"}, return_state=True)
    assert state.is_failed()
    message = str(state.message).strip()
    assert len(message.splitlines()) == 1, message
    assert {"drop_column": "BMI", "new_class": "7", "no_champion": "no champion"}[change] in message
    assert tree_digest(project) == before
    reason = message.rpartition("InputError: ")[2]
    assert _events("automl.run.failed", "nobody" if change == "no_champion" else "pima", since,
                   lambda event: event.payload["message"].endswith(reason))


def test_predictions_go_to_parquet_or_are_appended_to_a_database_table(pima, pg_url, tmp_path):
    import os

    import sqlalchemy

    from flows.score import score_flow

    root, _, new = pima
    new.to_csv(root / "batch.csv", index=False)
    result = score_flow(dataset=str(root / "batch.csv"), project="pima", output_root=str(root),
                        destination=str(tmp_path / "out"), file_format="parquet")
    parquet = pd.read_parquet(result["predictions"])
    assert Path(result["predictions"]).parent == tmp_path / "out" and len(parquet) == len(new)
    table, engine = f"automl_scores_{os.getpid()}", sqlalchemy.create_engine(pg_url)
    try:
        for _ in range(2):  # a second run appends its rows
            result = score_flow(dataset=str(root / "batch.csv"), project="pima", output_root=str(root),
                                destination=pg_url, table=table)
        stored = pd.read_sql(f"SELECT * FROM {table}", engine)
        assert table in result["predictions"] and len(stored) == 2 * len(new)
        assert stored["p_1"].round(6).tolist() == 2 * parquet["p_1"].round(6).tolist()
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
