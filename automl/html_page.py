"""One self-contained HTML page, readable offline: sections with a nav bar, tables that stay within the page,
charts drawn with matplotlib's Agg renderer and embedded as PNG ``data:`` URIs, inline styling and a
Content-Security-Policy that forbids loading anything else. ``report.html`` and ``history.html`` are built
from these parts. Every string from the data is HTML-escaped; charts are drawn with math text off.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from automl.version import __version__

__all__ = ["Section", "plotting", "figure", "embed", "note", "table", "page", "FOLDED_COLUMNS", "FOLDED_PREFIX"]

#: Table columns holding JSON, folded into a ``<details>`` cell so that rows stay one line high.
FOLDED_COLUMNS = ("hyperparameters", "params")
#: Characters of folded JSON shown in the summary of its cell.
FOLDED_PREFIX = 16

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1240px; margin: 0 auto; padding: 1.5rem; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
nav a { margin-right: 1rem; } .meta, .note, figcaption { color: #555; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .8rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
summary { cursor: pointer; white-space: nowrap; font-family: ui-monospace, monospace; }
details[open] > code { display: block; width: 26em; white-space: pre-wrap; overflow-wrap: anywhere; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.leader td { font-weight: 600; background: #e8f0fe; } tr.tie td { background: #f5f9ff; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
"""


@dataclass
class Section:
    """A section of the page: its anchor, its heading in the nav bar, its HTML body."""

    id: str
    heading: str
    body: str


@contextmanager
def plotting() -> Iterator[None]:
    """Matplotlib settings for the report's charts: plain text labels, a readable size."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "font.size": 10, "axes.spines.top": False,
                                "axes.spines.right": False}):
        yield


def figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas, outside pyplot: no global state, no GUI backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def embed(fig: Any, alt: str) -> str:
    """``fig`` as an ``<img>`` holding its PNG (a ``data:`` URI: the page stays one file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _cell(value: Any) -> tuple[str, bool]:
    """Display text of a table cell and whether it is numeric."""
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), False
    if isinstance(value, (int, np.integer)):
        return str(value), True
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "", True
        return (f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"), True
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str), False
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "", False
    return str(value), False


def _folded(text: str) -> str:
    """A JSON cell as a one-line summary (its first characters) that opens to the whole text."""
    if not text:
        return ""
    short = text if len(text) <= FOLDED_PREFIX else text[:FOLDED_PREFIX] + "…"
    return f"<details><summary>{html.escape(short)}</summary><code>{html.escape(text)}</code></details>"


def _breakable(text: str) -> str:
    """Escaped ``text`` that may wrap after its underscores: long snake_case names and model ids stay narrow."""
    return html.escape(text).replace("_", "_<wbr>")


def table(frame: pd.DataFrame, row_classes: list[str]) -> str:
    head = "".join(f"<th>{_breakable(str(c))}</th>" for c in frame.columns)
    folded = [c in FOLDED_COLUMNS for c in frame.columns]
    rows = []
    for cls, values in zip(row_classes, frame.itertuples(index=False), strict=True):
        cells = []
        for value, fold in zip(values, folded, strict=True):
            text, numeric = _cell(value)
            if fold:
                cells.append(f"<td>{_folded(text)}</td>")
            else:
                cells.append(f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{_breakable(text)}</td>")
        attr = f' class="{cls}"' if cls else ""
        rows.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def page(title: str, facts: dict[str, str], sections: list[Section]) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.heading)}</a>' for s in sections)
    meta = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
    body = "\n".join(f'<section id="{s.id}">\n<h2>{html.escape(s.heading)}</h2>\n{s.body}\n</section>'
                     for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<dl class="meta">{meta}</dl>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<footer><p class="note">Written by automl {html.escape(__version__)}.</p></footer>
</body>
</html>
"""
