"""``history.html``: a project's retraining history on one offline page — the champion's score on the fixed
holdout over time, each challenger's, the promotions, and the data each run saw (rows, source, drift).

Written by the retrain flow after each run beside ``leaderboard_history.csv``; like ``report.html`` it is one
self-contained file (charts embedded as PNG, no network).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from automl.html_page import Section, embed, figure, note, page, plotting, table
from automl.io import atomic_write_text

__all__ = ["write_history_report", "HISTORY_REPORT"]

HISTORY_REPORT = "history.html"
#: The history columns the table shows, in this order (those a file has).
SHOWN = ("time", "challenger", "promoted", "challenger_holdout", "champion_holdout", "gain", "rows", "holdout_rows",
         "source", "drift", "reason")


def champion_scores(history: pd.DataFrame) -> pd.Series:
    """The champion's holdout score after each run: the challenger's when promoted, else the champion's as
    measured in that run (the same model, scored on that run's holdout rows)."""
    promoted = history["promoted"].astype(str).eq("yes")
    return history["challenger_holdout"].where(promoted, history["champion_holdout"]).astype(float)


def write_history_report(history: pd.DataFrame, path: Path, project: str) -> None:
    """Write ``path`` atomically from the project's history frame (``leaderboard_history.csv``)."""
    metric = str(history["metric"].iloc[-1]) if len(history) else "score"
    sections = [_chart_section(history, metric), Section("runs", "Runs", table(
        history[[c for c in SHOWN if c in history.columns]].iloc[::-1].reset_index(drop=True),
        ["" for _ in range(len(history))]))]
    facts = {"project": project, "runs": str(len(history)),
             "promotions": str(int(history["promoted"].astype(str).eq("yes").sum())) if len(history) else "0"}
    atomic_write_text(path, page(f"{project}: retraining history", facts, sections))


def _chart_section(history: pd.DataFrame, metric: str) -> Section:
    if len(history) == 0:
        return Section("scores", "Scores over time", note("No run yet."))
    when = pd.to_datetime(history["time"], utc=True, errors="coerce")
    champion, challenger = champion_scores(history), history["challenger_holdout"].astype(float)
    promoted = history["promoted"].astype(str).eq("yes").to_numpy()
    with plotting():
        fig = figure(9, 3.6)
        ax = fig.add_subplot()
        ax.step(when, champion, where="post", color="#1f6feb", label="champion")
        ax.scatter(when, challenger, color="#999", s=18, label="challenger", zorder=3)
        ax.scatter(when[promoted], challenger[promoted], color="#2da44e", s=40, marker="^", label="promoted", zorder=4)
        ax.set_ylabel(f"{metric} on the fixed holdout")
        ax.legend(loc="best", frameon=False)
        fig.autofmt_xdate()
        image = embed(fig, f"The champion's {metric} on the fixed holdout after each run, challengers and promotions")
    caption = note("Each run scores the champion and its challenger on the run's fixed holdout rows (one row in five "
                 "by a hash of its content: the same rows whenever they are present). A challenger is promoted by "
                 "the rule in the run's reason.")
    return Section("scores", "Scores over time", image + caption)
