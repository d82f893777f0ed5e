"""automl/sources.py: folders, glob patterns, the newest N days and SQL queries as datasets; what was read
(provenance), the ingest cache key that follows it, and bad sources as one line through the real CLI.

SQL tests use the real PostgreSQL of ``conftest.PG_URL`` (tables ``automl_sources_test_<random>``, dropped after).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from automl.config import RunConfig
from automl.data import load
from automl.errors import InputError
from automl.sources import Source, fingerprint, mask_url
from conftest import REPO, prefect_server, run_module

DIABETES = REPO / "datasets" / "diabetes.csv"  # Pima (datasets/diabetes.yaml: public domain), 768 rows


def _diabetes() -> pd.DataFrame:
    return pd.read_csv(DIABETES)


def _with_password(url: str, password: str) -> str:
    """``url`` with this password (trust auth ignores it): for checks that it is never written."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def pima_table(pg_url: str) -> Iterator[str]:
    """A PostgreSQL table ``automl_sources_test_<random>`` holding Pima, with a ``day`` date per row."""
    from sqlalchemy import create_engine, text

    name = f"automl_sources_test_{uuid.uuid4().hex[:10]}"
    frame = _diabetes().assign(day=pd.Timestamp("2026-01-01") + pd.to_timedelta(range(768), unit="D"))
    engine = create_engine(pg_url)
    try:
        frame.to_sql(name, engine, index=False)
        yield name
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


# -- the Source value: options checked once ------------------------------------------------------------
@pytest.mark.parametrize(("options", "message"), [
    ({"dataset": "data.csv", "query": "SELECT 1"}, "--query needs a database URL as the dataset (postgresql://user@"
                                                    "host:5432/db), but got dataset='data.csv'"),
    ({"dataset": "postgresql://u:pw@db.example/sales"}, "postgresql://u:***@db.example/sales: a database URL needs "
                                                        "--query"),
    ({"dataset": "postgresql://u@h/db", "query": "DELETE FROM t"}, "--query must be a SELECT (or WITH … SELECT), "
                                                                   "but got query='DELETE FROM t'"),
    ({"dataset": "diabetes", "newest_days": 0.0}, "--newest-days must be a positive number of days, but got "
                                                  "newest_days=0.0"),
    ({"dataset": "diabetes", "newest_days": -3.0}, "newest_days=-3.0"),
    ({"dataset": "diabetes", "date_column": "day"}, "--date-column 'day' needs --newest-days N"),
    ({"dataset": "postgresql://u@h/db", "query": "SELECT 1", "newest_days": 7.0},
     "--newest-days 7 without --date-column picks files by modification time"),
])
def test_source_options_are_checked_once_with_the_bad_value(options, message):
    with pytest.raises(InputError) as info:
        RunConfig.from_options(**options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_config_carries_one_source_value_and_masks_urls():
    config = RunConfig.from_options(dataset="postgresql://u:hunter2@h:5432/db", query="  SELECT * FROM t;  ",
                                    newest_days=30.0, date_column="day")
    assert config.source == Source("postgresql://u:hunter2@h:5432/db", "SELECT * FROM t", 30.0, "day")
    assert config.query == "SELECT * FROM t"  # normalized once: the checksum wraps it in a subquery
    assert config.source.shown == "postgresql://u:***@h:5432/db" and "hunter2" not in repr(config.source)
    assert config.source.name == "t"
    assert mask_url("postgresql://${DB_USER}:${DB_PASSWORD}@h/db") == "postgresql://${DB_USER}:***@h/db"
    # Data handed over in memory has no source: the options are inert (retrain_flow drops the dataset).
    assert config.replace(dataset=None).dataset is None


# -- folders, glob patterns, the newest N days ---------------------------------------------------------
def test_a_folder_is_its_tables_in_file_name_order(tmp_path):
    frame = _diabetes()
    folder = tmp_path / "drops"
    (folder / "archive").mkdir(parents=True)
    frame.iloc[500:].to_parquet(folder / "2026-02.parquet")
    frame.iloc[:500][list(reversed(frame.columns))].to_csv(folder / "2026-01.csv", index=False)  # other order
    frame.iloc[:10].to_csv(folder / "archive" / "2025-12.csv", index=False)  # subfolders are not read
    frame.iloc[:10].to_csv(folder / ".~lock.2026-03.csv", index=False)  # nor hidden files
    (folder / "notes.txt").write_text("not a table")
    ds = load(str(folder), "Outcome")
    assert len(ds.frame) == 768 and list(ds.frame.columns) == list(reversed(frame.columns))
    assert ds.frame["Glucose"].tolist() == frame["Glucose"].astype("float32").tolist()
    read = ds.provenance
    assert read["kind"] == "folder" and read["location"] == str(folder) and read["rows"] == read["rows_read"] == 768
    assert [Path(f["path"]).name for f in read["files"]] == ["2026-01.csv", "2026-02.parquet"]
    assert read["files"][0]["bytes"] == (folder / "2026-01.csv").stat().st_size
    assert read["fingerprint"] == fingerprint(Source(str(folder))) and ds.card.name == "drops"
    json.dumps(read)  # plain JSON, for run.json and the champion's history


def test_a_glob_pattern_reads_the_files_it_matches(tmp_path):
    frame = _diabetes()
    for month, rows in (("2026-01", slice(0, 300)), ("2026-02", slice(300, 600)), ("2025-12", slice(600, 768))):
        frame.iloc[rows].to_parquet(tmp_path / f"{month}.parquet")
    ds = load(str(tmp_path / "2026-*.parquet"), "Outcome")
    assert len(ds.frame) == 600 and ds.provenance["kind"] == "glob"
    assert [Path(f["path"]).name for f in ds.provenance["files"]] == ["2026-01.parquet", "2026-02.parquet"]


def test_newest_days_of_a_date_column_keeps_the_rows_of_the_window(tmp_path):
    frame = _diabetes().assign(day=pd.Timestamp("2026-01-01") + pd.to_timedelta(range(768), unit="D"))
    frame.to_csv(tmp_path / "pima.csv", index=False)
    ds = load(Source(str(tmp_path / "pima.csv"), newest_days=100, date_column="day"), "Outcome")
    assert len(ds.frame) == 101  # the newest day and the 100 before it
    assert ds.provenance["rows_read"] == 768 and ds.provenance["rows"] == 101
    assert ds.provenance["date_column"] == "day" and ds.provenance["newest_days"] == 100


def test_newest_days_without_a_date_column_picks_recently_modified_files(tmp_path):
    frame = _diabetes()
    frame.iloc[:400].to_csv(tmp_path / "old.csv", index=False)
    frame.iloc[400:].to_csv(tmp_path / "new.csv", index=False)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(tmp_path / "old.csv", (ten_days_ago, ten_days_ago))
    ds = load(Source(str(tmp_path), newest_days=7), "Outcome")
    assert len(ds.frame) == 368 and [Path(f["path"]).name for f in ds.provenance["files"]] == ["new.csv"]
    os.utime(tmp_path / "new.csv", (ten_days_ago, ten_days_ago))
    with pytest.raises(InputError, match=r"no file modified in the last 7 days \(the newest, new.csv, on "):
        load(Source(str(tmp_path), newest_days=7), "Outcome")


# -- SQL on the real PostgreSQL ------------------------------------------------------------------------
def test_a_query_is_read_with_its_provenance_and_checksum(pg_url, pima_table, monkeypatch):
    from sqlalchemy.engine import make_url

    user = make_url(pg_url).username or os.environ.get("USER", "postgres")
    monkeypatch.setenv("AUTOML_TEST_PGUSER", user)
    url = make_url(pg_url)
    placeholder_url = f"{url.drivername}://${{AUTOML_TEST_PGUSER}}:hunter2@{url.host}:{url.port}/{url.database}"
    # '%' and ':' are the query's own, not parameters (psycopg2 and SQLAlchemy would read them as such).
    query = f"SELECT *, 'a%b:c' AS tag FROM {pima_table} WHERE \"Age\" >= 21"
    source = Source(placeholder_url, query, newest_days=365, date_column="day")
    ds = load(source, "Outcome")
    assert len(ds.frame) == 366 and set(ds.frame["tag"].astype(str)) == {"a%b:c"}
    read = ds.provenance
    assert read["kind"] == "sql" and read["query"] == query and read["files"] == []
    assert read["location"] == f"{url.drivername}://${{AUTOML_TEST_PGUSER}}:***@{url.host}:{url.port}/{url.database}"
    assert read["rows_read"] == 768 and read["rows"] == 366 and read["fingerprint"] == fingerprint(source)
    assert ds.source == read["location"] and ds.card.name == pima_table.replace("_", "-")
    assert "hunter2" not in json.dumps(read)


def test_a_whole_url_may_come_from_the_environment(pg_url, pima_table, monkeypatch):
    monkeypatch.setenv("AUTOML_TEST_DATABASE_URL", _with_password(pg_url, "hunter2"))
    source = RunConfig.from_options(dataset="${AUTOML_TEST_DATABASE_URL}", query=f"SELECT * FROM {pima_table}").source
    ds = load(source, "Outcome")
    assert source.kind == "sql" and len(ds.frame) == 768
    assert ds.provenance["location"] == ds.source == "${AUTOML_TEST_DATABASE_URL}"


def test_the_query_checksum_follows_the_rows(pg_url, pima_table):
    from sqlalchemy import create_engine, text

    name = f"{pima_table}_copy"
    engine = create_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE {name} AS SELECT * FROM {pima_table}"))
        source = Source(pg_url, f"SELECT * FROM {name}")
        before = fingerprint(source)
        assert before is not None and fingerprint(source) == before
        assert fingerprint(Source(pg_url, f"SELECT * FROM {name} ORDER BY \"Age\"")) != before  # another query
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {name} SET \"Glucose\" = \"Glucose\" + 1 WHERE \"Age\" = 50"))
        assert fingerprint(source) != before
        assert len(load(source, "Outcome").frame) == 768
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_queries_are_read_only_and_other_databases_are_read_uncached(pg_url, pima_table, tmp_path):
    with pytest.raises(InputError, match="cannot execute SELECT FOR UPDATE in a read-only transaction; fix"):
        load(Source(pg_url, f"SELECT * FROM {pima_table} FOR UPDATE"), "Outcome")
    with pytest.raises(InputError, match=r"^--query 'WITH gone AS \(DELETE .*' failed on postgresql://"):
        load(Source(pg_url, f"WITH gone AS (DELETE FROM {pima_table} RETURNING *) SELECT * FROM gone"), "Outcome")
    assert len(load(Source(pg_url, f"SELECT * FROM {pima_table}"), "Outcome").frame) == 768  # nothing was deleted
    with sqlite3.connect(tmp_path / "pima.db") as connection:
        _diabetes().to_sql("pima", connection, index=False)
    source = Source(f"sqlite:///{tmp_path / 'pima.db'}", "SELECT * FROM pima")
    assert len(load(source, "Outcome").frame) == 768 and fingerprint(source) is None  # no checksum: no cache


# -- the ingest cache follows what is read --------------------------------------------------------------
def test_source_key_follows_files_added_to_a_folder_and_their_times(tmp_path):
    from flows.automl_flow import source_key

    frame = _diabetes()
    frame.iloc[:400].to_csv(tmp_path / "a.csv", index=False)
    key = source_key(str(tmp_path), "Outcome")
    assert key is not None and key == source_key(Source(str(tmp_path)), "Outcome")
    assert source_key(Source(str(tmp_path), newest_days=3), "Outcome") != key
    frame.iloc[400:].to_csv(tmp_path / "b.csv", index=False)
    added = source_key(str(tmp_path), "Outcome")
    assert added != key
    os.utime(tmp_path / "b.csv", (time.time() - 3600, time.time() - 3600))  # same bytes, rewritten
    assert source_key(str(tmp_path), "Outcome") != added
    assert source_key(str(tmp_path / "*.csv"), "Outcome") not in (None, added)
    assert source_key(str(tmp_path / "*.txt"), "Outcome") is None  # nothing to read: not cached


def test_files_dropped_into_a_folder_are_read_by_the_next_ingest(prefect_api, tmp_path):
    frame = _diabetes()
    folder = tmp_path / "drops"
    folder.mkdir()
    frame.iloc[:400].to_csv(folder / "2026-01.csv", index=False)
    with prefect_server(prefect_api):
        from prefect import flow

        from flows.automl_flow import ingest

        @flow
        def ingest_twice(folder: str) -> list:
            source = RunConfig.from_options(dataset=folder).source
            return [ingest(source, "Outcome", None, return_state=True) for _ in range(2)]

        first, again = ingest_twice(str(folder))
        assert (first.name, again.name) == ("Completed", "Cached")
        assert len(again.result().frame) == 400
        frame.iloc[400:].to_parquet(folder / "2026-02.parquet")
        changed, cached = ingest_twice(str(folder))
    assert (changed.name, cached.name) == ("Completed", "Cached")
    ds = changed.result()
    assert len(ds.frame) == 768 and len(ds.provenance["files"]) == 2


def test_a_flow_reads_its_database_url_from_a_secret_block(prefect_api):
    with prefect_server(prefect_api):
        from prefect.blocks.system import Secret

        from flows.automl_flow import secret_dataset

        name = f"automl-test-db-{uuid.uuid4().hex[:8]}"
        Secret(value="postgresql://u:hunter2@db.example:5432/sales").save(name)
        assert secret_dataset(None, name) == "postgresql://u:hunter2@db.example:5432/sales"
        with pytest.raises(InputError, match="not both"):
            secret_dataset("diabetes", name)
        with pytest.raises(InputError, match=r"^database_url_secret 'no-such-secret-block': .*; create it"):
            secret_dataset(None, "no-such-secret-block")


# -- bad sources through the real CLI: one line, exit code 2, nothing written ------------------------------
def _write_folders(root: Path) -> None:
    frame = _diabetes()
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no tables here")
    (root / "differ").mkdir()
    frame.iloc[:400].to_csv(root / "differ" / "a.csv", index=False)
    frame.iloc[400:].rename(columns={"BMI": "bmi"}).to_csv(root / "differ" / "b.csv", index=False)
    frame.assign(day=["2026-01-0" + str(1 + i % 9) for i in range(767)] + ["last tuesday"]).to_csv(
        root / "dates.csv", index=False)


def _cli_cases(pg_url: str, table: str) -> dict[str, tuple[list[str], list[str]]]:
    down = _with_password(pg_url.replace(":5432/", ":1/") if ":5432/" in pg_url else pg_url, "hunter2")
    query = f"SELECT no_such_column FROM {table}"
    return {
        "sql-error": ([_with_password(pg_url, "hunter2"), "--query", query, "--target", "Outcome"],
                      [f"--query {query!r} failed on ", ":***@", 'column "no_such_column" does not exist',
                       "fix the query"]),
        "database-down": ([down, "--query", f"SELECT * FROM {table}", "--target", "Outcome"],
                          [":***@", ": cannot connect (", "check that the database server is running"]),
        "missing-env-var": (["postgresql://${AUTOML_TEST_NO_SUCH_VAR}@127.0.0.1:5432/test", "--query", "SELECT 1",
                             "--target", "Outcome"],
                            ["the URL names ${AUTOML_TEST_NO_SUCH_VAR}, which is not set in the environment; export "]),
        "no-tables-in-folder": (["empty", "--target", "Outcome"], ["empty: no .csv, .parquet or .pq file in it"]),
        "glob-matches-nothing": (["2027-*.parquet", "--target", "Outcome"],
                                 ["2027-*.parquet: matches no .csv, .parquet or .pq file; check the pattern"]),
        "columns-differ": (["differ", "--target", "Outcome"],
                           ["b.csv: its columns differ from those of ", "a.csv (lacks 'BMI'; adds 'bmi')"]),
        "query-without-url": ([str(DIABETES), "--query", "SELECT 1", "--target", "Outcome"],
                              ["--query needs a database URL as the dataset"]),
        "url-without-query": ([_with_password(pg_url, "hunter2"), "--target", "Outcome"],
                              [":***@", "a database URL needs --query 'SELECT …'"]),
        "newest-days-zero": (["diabetes", "--newest-days", "0"], ["but got newest_days=0.0"]),
        "date-column-missing": (["diabetes", "--newest-days", "30", "--date-column", "when"],
                                ["--date-column 'when' not found; columns are: Pregnancies, "]),
        "date-column-not-dates": (["dates.csv", "--target", "Outcome", "--newest-days", "30", "--date-column", "day"],
                                  ["--date-column 'day' holds 'last tuesday' in row 768, not a date"]),
        "date-column-of-numbers": (["diabetes", "--newest-days", "30", "--date-column", "Age"],
                                   ["--date-column 'Age' holds numbers, not dates"]),
    }


@pytest.fixture(scope="module")
def cli_errors(prefect_api, pg_url, pima_table, tmp_path_factory) -> dict[str, tuple[object, Path]]:
    """Every bad source through ``python -m automl.run``, two at a time (each fails before training)."""
    root = tmp_path_factory.mktemp("cli")
    _write_folders(root)
    cases = _cli_cases(pg_url, pima_table)

    def run(case: str) -> tuple[object, Path]:
        out = root / f"out-{case}"
        return run_module("automl.run", *cases[case][0], "--output", out, cwd=root, timeout=180), out

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(cases, pool.map(run, cases), strict=True))


CLI_CASES = ["sql-error", "database-down", "missing-env-var", "no-tables-in-folder", "glob-matches-nothing",
             "columns-differ", "query-without-url", "url-without-query", "newest-days-zero", "date-column-missing",
             "date-column-not-dates", "date-column-of-numbers"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_a_bad_source_is_one_line_and_exit_code_2(case, cli_errors, pg_url, pima_table):
    proc, out = cli_errors[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for fragment in _cli_cases(pg_url, pima_table)[case][1]:
        assert fragment in lines[0], lines[0]
    assert "hunter2" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not out.exists()


# -- end to end: a query on PostgreSQL through the CLI and the flow ---------------------------------------
def test_a_run_on_a_postgresql_query_end_to_end(prefect_api, pg_url, pima_table, tmp_path):
    out = tmp_path / "out"
    url = _with_password(pg_url, "hunter2")  # masked in every file the run writes
    query = f'SELECT * FROM {pima_table} ORDER BY "day"'
    proc = run_module("automl.run", url, "--query", query, "--target", "Outcome", "--max-runtime-secs", 20,
                      "--max-models", 2, "--workers", 1, "--output", out, cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) >= 1 and board["auc"].iloc[0] > 0.5
    summary = json.loads((out / "run.json").read_text())
    read = summary["source"]
    assert read["kind"] == "sql" and read["location"] == mask_url(url) and ":***@" in read["location"]
    assert read["query"] == query and read["rows"] == read["rows_read"] == 768 and read["fingerprint"]
    assert summary["dataset"]["source"] == mask_url(url) and summary["config"]["dataset"] == mask_url(url)
    assert summary["config"]["query"] == query
    events = pd.read_csv(out / "event_log.csv")
    assert events["message"].str.contains(f"query {query[:80]!r} on {mask_url(url)}: 768 rows", regex=False).any()
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".html", ".txt", ".yaml"):
            assert "hunter2" not in path.read_text(errors="replace"), path
    assert "hunter2" not in proc.stdout + proc.stderr
