"""report.html from real cross-validated models: every section, every chart, nothing external."""

from __future__ import annotations

import base64
import json
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

from automl.data import load
from automl.evaluation import Evaluated, cross_validate, make_folds
from automl.explain import permutation_importance
from automl.metrics import DEFAULT_SORT, get
from automl.models import reference_candidates
from automl.preprocess import Schema, encode_target, infer_schema
from automl.report import section_ids, write_report
from conftest import REPO, subprocess_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Wine's cultivars, named to test escaping in HTML and plain (not math) text in charts.
WINE_CLASSES = ["cultivar <script>", "$1 & $2", "Barbera"]
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "dl", "dt", "dd",
                "nav", "a", "main", "section", "p", "div", "table", "thead", "tbody", "tr", "th", "td", "img",
                "footer", "wbr"}


def _cross_validated(x: pd.DataFrame, y: np.ndarray, schema: Schema) -> tuple[list[Evaluated], list]:
    folds = make_folds(y, schema.task, 3, seed=0)
    # GLM and XRT: the quickest two (histogram boosting is the slowest on tiny data).
    candidates = [c for c in reference_candidates(schema.task, 0, n_jobs=1) if c.algo in ("GLM", "XRT")]
    return [cross_validate(c, x, y, schema, folds) for c in candidates], folds


def _board(evaluated: list[Evaluated], y: np.ndarray, task: str) -> pd.DataFrame:
    """A leaderboard with bootstrap intervals and the indistinguishable flag, as the pipeline builds it."""
    from automl.stats import Bootstrap

    sort = DEFAULT_SORT[task]
    metric = get(sort, task)
    oof = {e.model.model_id: e.oof for e in evaluated}
    board = pd.DataFrame([{"model_id": e.model.model_id, **e.model.metrics, "algo": e.model.algo,
                           "hyperparameters": json.dumps(e.model.params, sort_keys=True)} for e in evaluated])
    board = board.sort_values(sort, ascending=not metric.higher_is_better).reset_index(drop=True)
    boot = Bootstrap(y, task, n_boot=200, seed=0)
    leader = board["model_id"].iloc[0]
    ci = [boot.interval(metric, oof[m]) for m in board["model_id"]]
    board[f"{sort}_ci_low"], board[f"{sort}_ci_high"] = zip(*ci, strict=True)
    board["indistinguishable_from_leader"] = [m != leader and boot.difference(metric, oof[leader], oof[m])[0] <= 0
                                              for m in board["model_id"]]
    first = ["model_id", sort, f"{sort}_ci_low", f"{sort}_ci_high"]
    return board[first + [c for c in board.columns if c not in first]]


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
    assert all(model_id in _section_of(text, "leaderboard") for model_id in run["board"]["model_id"])
    assert "&lt;relu&gt; &amp; co" in text  # trial params, escaped
    if run["task"] == "multiclass":
        assert "cultivar &lt;script&gt;" in text and "$1 &amp; $2" in text
    if run["task"] != "regression":
        assert "Leader " + run["board"]["model_id"].iloc[0] in shown  # the confusion matrix caption

    if run["task"] == "binary":
        _screenshot_if_chromium(path, tmp_path)


def _screenshot_if_chromium(path: Path, tmp_path: Path) -> None:
    """Render the page in headless Chromium when one is installed; the checks above stand alone."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        return
    shot = tmp_path / "screenshot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1200,5000",
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


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, automl.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
