"""report.html from real cross-validated models: every section, every chart, nothing external."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from automl import leaderboard
from automl.data import load
from automl.evaluation import Evaluated, cross_validate, make_folds
from automl.explain import permutation_importance
from automl.metrics import DEFAULT_SORT, get
from automl.models import reference_candidates
from automl.preprocess import Schema, encode_target, infer_schema
from automl.report import MAX_CHART_ROWS, chart_rows, history_points, section_ids, write_report
from conftest import REPO, subprocess_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Wine's cultivars, named to test escaping in HTML and plain (not math) text in charts.
WINE_CLASSES = ["cultivar <script>", "$1 & $2", "Barbera"]
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "dl", "dt", "dd",
                "nav", "a", "main", "section", "p", "div", "table", "thead", "tbody", "tr", "th", "td", "img",
                "footer", "wbr", "details", "summary", "code"}
#: The page must fit a window this wide; a 13-px table character is about this many pixels wide.
PAGE_PX, CHAR_PX, CELL_PADDING_PX = 1300, 7.5, 17


def _cross_validated(x: pd.DataFrame, y: np.ndarray, schema: Schema) -> tuple[list[Evaluated], list]:
    folds = make_folds(y, schema.task, 3, seed=0)
    # GLM and XRT: the quickest two (histogram boosting is the slowest on tiny data).
    candidates = [c for c in reference_candidates(schema.task, 0, n_jobs=1) if c.algo in ("GLM", "XRT")]
    return [cross_validate(c, x, y, schema, folds) for c in candidates], folds


def _board(evaluated: list[Evaluated], y: np.ndarray, task: str) -> pd.DataFrame:
    """The leaderboard as the pipeline builds it: ``leaderboard.build``, then bootstrap intervals and ties."""
    rows = [{"model_id": e.model.model_id, "algo": e.model.algo, "params": e.model.params, "metrics": e.model.metrics,
             "training_time_ms": e.training_time_ms, "predict_time_per_row_ms": e.predict_time_per_row_ms}
            for e in evaluated]
    board = leaderboard.build(rows, task, DEFAULT_SORT[task])
    return leaderboard.add_confidence(board, {e.model.model_id: e.oof for e in evaluated}, y, task, DEFAULT_SORT[task])


def _trials(metric: str, n: int = 14) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    states = ["COMPLETE"] * (n - 3) + ["PRUNED", "FAIL", "COMPLETE"]
    return pd.DataFrame({
        "number": np.arange(n), "state": states,
        f"validation_{metric}": np.where(np.array(states) == "FAIL", np.nan, rng.uniform(0.6, 0.9, n)),
        "best_epoch": rng.integers(1, 60, n), "duration_s": rng.uniform(1, 5, n),
        "params": [json.dumps({"units": int(u), "activation": "<relu> & co"}) for u in rng.integers(8, 256, n)],
        "error": ["" if s != "FAIL" else "ValueError: <boom>" for s in states]})


def _run(task: str) -> dict[str, Any]:
    if task == "multiclass":
        wine = load_wine(as_frame=True).frame
        x, y = wine.drop(columns="target"), wine["target"].to_numpy()
        schema = Schema("multiclass", "target", list(x.columns), [], [], classes=WINE_CLASSES)
    else:
        ds = load("diabetes" if task == "binary" else "diabetes-progression")
        schema = infer_schema(ds)
        x, y = ds.frame.drop(columns=[ds.target]), encode_target(schema, ds.frame[ds.target])
    evaluated, folds = _cross_validated(x, y, schema)
    board = _board(evaluated, y, task)
    sort = DEFAULT_SORT[task]
    leader = next(e.model for e in evaluated if e.model.model_id == board["model_id"].iloc[0])
    importance = permutation_importance(leader, x, y, folds, get(sort, task), task, n_repeats=1)
    return {"title": f"automl report: {task} <test>", "task": task, "classes": schema.classes, "sort_metric": sort,
            "board": board, "y": y, "oof": {e.model.model_id: e.oof for e in evaluated}, "trials": _trials(sort),
            "param_importances": {"units": 0.6, "learning_rate": 0.3, "dropout": 0.1},
            "feature_importance": importance}


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def run(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _run(request.param)


class _Page(HTMLParser):
    """Sections, their headings and images, every tag and every link of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.sections: list[str] = []
        self.headings: dict[str, str] = {}
        self.images: list[tuple[str, str, str]] = []  # (section, src, alt)
        self.links: list[str] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self._in.append(tag)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "img":
            self.images.append((self.sections[-1] if self.sections else "", a.get("src", ""), a.get("alt", "")))
        self.links += [a[k] for k in ("src", "href") if k in a]

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag)]

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in and self._in[-1] == "h2" and self.sections:
            self.headings[self.sections[-1]] = data


def _png(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:60]
    return base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)


def _section_of(html_text: str, section: str) -> str:
    match = re.search(rf'<section id="{section}">(.*?)</section>', html_text, re.S)
    assert match, section
    return match.group(1)


def test_report_has_every_section_and_chart(run: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(path, **run)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # written atomically, no temp file left
    text = path.read_text(encoding="utf-8")
    page = _Page(text)

    assert page.sections == section_ids(run["task"])
    for section, src, alt in page.images:
        png = _png(src)
        assert png.startswith(PNG_SIGNATURE) and len(png) > 1024, section
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert width >= 300 and height >= 150, (section, width, height)
        assert alt.startswith(page.headings[section]), (section, alt)
    assert {s for s, _, _ in page.images} == set(page.sections)  # every section has a chart

    # Offline and self-contained: no scripts, no stylesheets or images from anywhere else.
    assert not re.search(r"https?://", text, re.I)
    assert page.tags <= ALLOWED_TAGS, page.tags - ALLOWED_TAGS
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in page.links)
    assert {link[1:] for link in page.links if link.startswith("#")} == set(page.sections)

    shown = "".join(page.text)
    assert run["title"] in shown and "&lt;test&gt;" in text
    board_text = "".join(_Page(_section_of(text, "leaderboard")).text)
    assert all(model_id in board_text for model_id in run["board"]["model_id"])
    assert "&lt;relu&gt; &amp; co" in text  # trial params, escaped
    if run["task"] == "multiclass":
        assert "cultivar &lt;script&gt;" in text and "$1 &amp; $2" in text
    if run["task"] != "regression":
        assert "Leader " + run["board"]["model_id"].iloc[0] in shown  # the confusion matrix caption

    if run["task"] == "binary":
        _screenshot(path, tmp_path)


class _Tables(HTMLParser):
    """Each table's cells as the pieces of text they show, split where a tag such as ``<wbr>`` stands.

    Text inside a closed ``<details>`` is hidden except its ``<summary>`` (which never wraps);
    JSON shown anywhere else on the page is collected in ``loose_json``.
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[dict[str, list]] = []
        self.loose_json: list[str] = []
        self._details = self._summary = 0
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"headers": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = []
            (self.tables[-1]["headers"] if tag == "th" else self.tables[-1]["rows"][-1]).append(self._cell)
        elif tag == "details":
            self._details += 1
        elif tag == "summary":
            self._summary += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td"):
            self._cell = None
        elif tag == "details":
            self._details -= 1
        elif tag == "summary":
            self._summary -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None and (not self._details or self._summary):
            # The narrowest a piece can be: its longest word, or all of it where it cannot wrap.
            self._cell.append(data if self._summary else max(data.split() or [""], key=len))
        if '{"' in data and not self._details:
            self.loose_json.append(data)

    def width_px(self, table: dict[str, list]) -> float:
        """About the narrowest the table can be: each column as wide as its longest unbreakable piece."""
        cells = [table["headers"], *(row for row in table["rows"] if row)]
        return sum(max(len(piece) for row in cells for piece in row[col]) * CHAR_PX + CELL_PADDING_PX
                   for col in range(len(table["headers"])))


def test_leaderboard_table_fits_the_page(run: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(path, **run)
    text = path.read_text(encoding="utf-8")
    tables = _Tables(text)
    assert not tables.loose_json, tables.loose_json[:2]  # hyperparameters open on a click, folded by default
    board = _Tables(_section_of(text, "leaderboard")).tables[0]
    col = ["".join(h) for h in board["headers"]].index("hyperparameters")
    assert len(board["rows"][1:]) == len(run["board"])
    for row, params in zip(board["rows"][1:], run["board"]["hyperparameters"], strict=True):
        summary = "".join(row[col])
        assert params.startswith(summary.removesuffix("…")) and len(summary) <= 30, summary
    assert html.escape(run["board"]["hyperparameters"].iloc[0]) in text  # the whole JSON, folded
    body = re.search(r"body \{[^}]*max-width: (\d+)px[^}]*padding: ([\d.]+)rem", text)
    assert body and int(body[1]) <= PAGE_PX
    content_px = int(body[1]) - 2 * 16 * float(body[2])
    assert tables.width_px(board) <= content_px, (tables.width_px(board), content_px)


def _chromium() -> str:
    """Headless Chromium: the machine's, else Debian's package installed now (root and apt-get; about a minute).
    The rendering check fails, never skips, where neither is possible: the report must be seen to render."""
    names = ("chromium", "chromium-browser", "google-chrome")
    browser = next(filter(None, map(shutil.which, names)), None)
    if browser is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900,
                       check=False)
        browser = next(filter(None, map(shutil.which, names)), None)
    if browser is None:
        pytest.fail("no Chromium to render report.html: install Debian's chromium package (apt-get install "
                    "chromium) or put chromium on PATH")
    return browser


def _screenshot(path: Path, tmp_path: Path) -> None:
    """Render the page in headless Chromium: a screenshot that is not a blank page."""
    browser = _chromium()
    shot = tmp_path / "screenshot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium'}", f"--window-size={PAGE_PX},5000",
                    f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists(), "headless Chromium wrote no screenshot"
    png = shot.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 50_000  # a blank page compresses to a few KB


def test_sections_without_data_say_so(tmp_path: Path) -> None:
    run = _run_without_search()
    for trials in (run["trials"], run["trials"].iloc[:0]):
        path = tmp_path / "report.html"
        write_report(path, **(run | {"trials": trials}))
        text = path.read_text(encoding="utf-8")
        page = _Page(text)
        assert page.sections == section_ids("binary")
        assert {s for s, _, _ in page.images} == {"leaderboard", "roc", "pr", "confusion"}
        assert "No completed search trials" in _section_of(text, "search")
        assert "Not computed" in _section_of(text, "param-importance")
        assert "Not computed" in _section_of(text, "feature-importance")


def _run_without_search() -> dict[str, Any]:
    """A board of two synthetic models on 200 rows; the search pruned or failed every trial."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    oof = {}
    for name, skill in (("GLM_1", 1.5), ("GBM_1", 0.5)):
        p = 1 / (1 + np.exp(-(skill * (2 * y - 1) + rng.normal(size=200))))
        oof[name] = np.column_stack([1 - p, p])
    board = pd.DataFrame({"model_id": ["GLM_1", "GBM_1"], "auc": [0.8, 0.6], "logloss": [0.5, 0.65]})
    trials = _trials("auc", 4).assign(state=["PRUNED", "FAIL", "PRUNED", "RUNNING"])
    return {"title": "no search", "task": "binary", "classes": ["no", "yes"], "sort_metric": "auc", "board": board,
            "y": y, "oof": oof, "trials": trials, "param_importances": None, "feature_importance": None}


def test_chart_rows_are_a_seeded_stratified_sample_of_bounded_size() -> None:
    y = np.repeat([0, 1, 2], [90_000, 9_900, 100])
    rows = chart_rows(y, "multiclass", 2_000, seed=3)
    assert len(rows) <= 2_000 and np.array_equal(rows, np.unique(rows))
    assert np.bincount(y[rows]).tolist() == [1_800, 198, 2]  # each class keeps its share, the rare one too
    assert np.array_equal(rows, chart_rows(y, "multiclass", 2_000, seed=3))
    assert not np.array_equal(rows, chart_rows(y, "multiclass", 2_000, seed=4))
    assert len(chart_rows(np.arange(50_000.0), "regression", 2_000)) == 2_000
    assert np.array_equal(chart_rows(y[:1_500], "multiclass", 2_000), np.arange(1_500))  # small: every row


@pytest.mark.parametrize("higher", [True, False])
def test_history_points_are_bounded_and_keep_the_best_so_far_exact(higher: bool) -> None:
    values = np.random.default_rng(0).normal(size=100_000)
    shown, records = history_points(values, higher, 500)
    best = np.maximum.accumulate(values) if higher else np.minimum.accumulate(values)
    assert len(shown) <= 500 + len(records) < 600 and set(records) <= set(shown)
    # The step line through the record-setting trials gives the best so far at every trial.
    steps = values[records][np.searchsorted(records, np.arange(len(values)), side="right") - 1]
    np.testing.assert_array_equal(steps, best)


def test_a_large_table_draws_bounded_charts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """50,000 scored rows and 5,000 trials: the curves see a 20,000-row sample, the history ~1,000 trials."""
    import sklearn.metrics

    rng = np.random.default_rng(2)
    n = 50_000
    y = (rng.random(n) < 0.1).astype(int)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=n))))
    run = _run_without_search() | {"y": y, "oof": {"GLM_1": np.column_stack([1 - p, p]), "GBM_1": np.full((n, 2), .5)},
                                   "trials": _trials("auc", 5_000)}
    seen: list[int] = []
    for name in ("roc_curve", "precision_recall_curve", "confusion_matrix"):
        real = getattr(sklearn.metrics, name)
        monkeypatch.setattr(sklearn.metrics, name,
                            lambda y_true, *a, real=real, **k: seen.append(len(y_true)) or real(y_true, *a, **k))
    write_report(tmp_path / "report.html", **run)
    assert len(seen) == 5 and MAX_CHART_ROWS - 2 <= min(seen) <= max(seen) <= MAX_CHART_ROWS  # shares round down
    text = tmp_path.joinpath("report.html").read_text(encoding="utf-8")
    assert re.search(r"class-stratified sample of 19,99\d of 50,000 rows", _section_of(text, "roc"))
    assert re.search(r"The chart shows 1,0\d\d of 4,99\d completed trials", _section_of(text, "search"))


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, automl.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
