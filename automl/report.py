"""``report.html``: one self-contained page about a run, readable offline.

Static PNG charts (matplotlib's Agg renderer) are embedded as base64 ``data:`` URIs and
the styling is inline, so the file can be mailed, archived or opened with no network; a
Content-Security-Policy forbids the browser to load anything else. Matplotlib is imported
only while a report is written: importing this module stays cheap. Every string from the
data (model ids, class labels, column names, hyperparameters) is HTML-escaped, and drawn
with math text off, so a ``$`` in a label cannot break a chart.

Tables stay within the page: names may wrap after underscores, and hyperparameter JSON is
folded into a ``<details>`` cell showing its first characters. Charts draw bounded samples
(:data:`MAX_CHART_ROWS` rows, :data:`MAX_HISTORY_TRIALS` trials), so a report costs about
the same for a thousand rows or a million.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.html_page import Section, embed, figure, note, page, plotting, table
from automl.io import atomic_write_text
from automl.metrics import Metric, get

__all__ = ["write_report", "section_ids", "chart_rows", "history_points"]

#: Models drawn in the ROC and precision-recall charts, best first.
TOP_CURVES = 5
#: Rows drawn in the leaderboard chart and bars in the importance charts.
MAX_BARS = 30
#: Trials listed in the search section's table.
TOP_TRIALS = 5
#: Classes up to which confusion-matrix cells are annotated with their counts.
MAX_ANNOTATED_CLASSES = 15
#: Rows behind the ROC, precision-recall, residual and confusion charts: a seeded sample (stratified by
#: class) above this, so that the report's cost does not grow with the table.
MAX_CHART_ROWS = 20_000
#: Trials drawn in the search history chart, besides those that set a new best.
MAX_HISTORY_TRIALS = 1_000



#: Chart colours: the leader, models tied with it, the others.
_LEADER, _TIE, _OTHER = "#1f4e9e", "#6f9ad6", "#9a9a9a"


def section_ids(task: str) -> list[str]:
    """The ids of the report's sections for ``task``, in page order."""
    classify = ["roc", "pr"] if task == "binary" else []
    outcome = ["residuals"] if task == "regression" else ["confusion"]
    return ["leaderboard", *classify, *outcome, "search", "param-importance", "feature-importance"]


def chart_rows(y: np.ndarray, task: str, limit: int, seed: int = 0) -> np.ndarray:
    """Positions of the rows the charts draw: all of them up to ``limit``, else a seeded sample of at most ``limit``.

    For classification the sample keeps each class's share (rounded down, but at least one
    row per class), so rare classes stay on the charts.
    """
    n = len(y)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if task == "regression":
        return np.sort(rng.choice(n, limit, replace=False))
    strata = [np.flatnonzero(y == c) for c in np.unique(y)]
    return np.sort(np.concatenate([rng.choice(rows, max(1, len(rows) * limit // n), replace=False)
                                   for rows in strata]))


def history_points(values: np.ndarray, higher: bool, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the trials to draw, and of those that set a new best (the steps of the best-so-far line).

    At most ``limit`` evenly spaced trials are drawn, plus every trial that set a new best:
    the chart costs about the same for a hundred trials or a million, and its best-so-far
    line stays exact.
    """
    best = np.maximum.accumulate(values) if higher else np.minimum.accumulate(values)
    records = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    spread = np.linspace(0, len(values) - 1, min(limit, len(values))).round().astype(int)
    return np.union1d(spread, records), records


def write_report(path: Path, *, title: str, task: str, classes: list, sort_metric: str, board: pd.DataFrame,
                 y: np.ndarray, oof: dict[str, np.ndarray], trials: pd.DataFrame,
                 param_importances: dict[str, float] | None, feature_importance: pd.DataFrame | None,
                 summary: dict[str, Any] | None = None, evaluation: str = "out-of-fold") -> None:
    """Write the run's report to ``path`` atomically: a single HTML file with embedded charts.

    ``board`` is the leaderboard frame (best first; optional ``<sort>_ci_low``,
    ``<sort>_ci_high`` and ``indistinguishable_from_leader`` columns), ``oof`` maps model
    ids to out-of-fold predictions (class probabilities, or values for regression),
    ``trials`` is the search's ``trials.csv`` frame, and ``summary`` adds key/value lines
    (dataset, budget, ...) under the title. ``evaluation`` names where the scores and
    predictions come from ("out-of-fold", or "holdout" for a user's leaderboard frame).
    Sections: :func:`section_ids`.
    """
    metric = _metric(sort_metric, task)
    leader = str(board["model_id"].iloc[0]) if len(board) else None
    rows, charted = chart_rows(y, task, MAX_CHART_ROWS), evaluation
    if len(rows) < len(y):
        kind = "a seeded random" if task == "regression" else "a seeded, class-stratified"
        charted = f"{evaluation} ({kind} sample of {len(rows):,} of {len(y):,} rows)"
        y, oof = np.asarray(y)[rows], {m: np.asarray(p)[rows] for m, p in oof.items()}
    with plotting():
        sections = [_leaderboard_section(board, sort_metric, metric, evaluation)]
        if task == "binary":
            sections += _curve_sections(board, y, oof, classes, charted)
        if task == "regression":
            sections.append(_residuals_section(y, oof, leader, charted))
        else:
            sections.append(_confusion_section(y, oof, leader, classes, charted))
        sections += [_search_section(trials, task, metric),
                     _param_importance_section(param_importances),
                     _feature_importance_section(feature_importance, sort_metric)]
    facts = {"Task": task, "Sort metric": sort_metric, "Evaluation": evaluation, "Models": str(len(board)),
             "Leader": leader or "none",
             **{str(k): str(v) for k, v in (summary or {}).items()}}
    atomic_write_text(path, page(title, facts, sections))


# -- sections -----------------------------------------------------------------------------
def _leaderboard_section(board: pd.DataFrame, sort_metric: str, metric: Metric | None, evaluation: str) -> Section:
    low, high = f"{sort_metric}_ci_low", f"{sort_metric}_ci_high"
    has_ci = low in board and high in board
    tie = board["indistinguishable_from_leader"].fillna(False).astype(bool) \
        if "indistinguishable_from_leader" in board else pd.Series(False, index=board.index)
    row_classes = ["leader" if i == 0 else "tie" if tie.iloc[i] else "" for i in range(len(board))]
    body = [table(board, row_classes)]
    shown = board[board[sort_metric].notna()].head(MAX_BARS) if sort_metric in board else board.iloc[:0]
    if len(shown):
        fig = figure(8, 1.2 + 0.32 * len(shown))
        ax = fig.add_subplot()
        pos = np.arange(len(shown))[::-1]
        for p, (i, row) in zip(pos, shown.iterrows(), strict=True):
            color = _LEADER if i == board.index[0] else _TIE if tie.loc[i] else _OTHER
            err = None
            if has_ci and pd.notna(row[low]) and pd.notna(row[high]):
                value = row[sort_metric]
                err = [[max(value - row[low], 0.0)], [max(row[high] - value, 0.0)]]
            ax.errorbar([row[sort_metric]], [p], xerr=err, fmt="o", color=color, capsize=3, markersize=6)
        ax.set_yticks(pos, labels=[str(m) for m in shown["model_id"]])
        ax.set_xlabel(f"{sort_metric} ({evaluation}){_direction(metric)}")
        ax.grid(axis="x", alpha=0.3)
        body.append(embed(fig, "Leaderboard chart: " + sort_metric + " per model"
                     + (" with 95% bootstrap confidence intervals" if has_ci else "")))
        notes = ["Best first; the leader is dark blue."]
        if "indistinguishable_from_leader" in board:
            notes.append("Light blue: statistically indistinguishable from the leader (paired bootstrap); "
                         "grey: worse.")
        if has_ci:
            notes.append(f"Error bars: 95% bootstrap confidence intervals of the {evaluation} score.")
        if len(board) > len(shown):
            notes.append(f"The chart shows the first {len(shown)} of {len(board)} models.")
        body.append(note(" ".join(notes)))
    return Section("leaderboard", "Leaderboard", "\n".join(body))


def _curve_sections(board: pd.DataFrame, y: np.ndarray, oof: dict[str, np.ndarray],
                    classes: list, evaluation: str) -> list[Section]:
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    top = [m for m in map(str, board["model_id"]) if m in oof and np.isfinite(oof[m]).all()][:TOP_CURVES]
    positive = classes[1] if len(classes) > 1 else 1
    caption = f"{evaluation.capitalize()} predictions of the best {len(top)} model(s); positive class: {positive}."
    if not top:
        missing = note(f"No {evaluation} predictions available.")
        return [Section("roc", "ROC curves", missing), Section("pr", "Precision-recall curves", missing)]
    roc_fig, pr_fig = figure(6.5, 5), figure(6.5, 5)
    roc_ax, pr_ax = roc_fig.add_subplot(), pr_fig.add_subplot()
    for model_id in top:
        score = _positive_score(oof[model_id])
        fpr, tpr, _ = roc_curve(y, score)
        roc_ax.plot(fpr, tpr, label=f"{model_id} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(y, score)
        pr_ax.plot(recall, precision, drawstyle="steps-post",
                   label=f"{model_id} (AP {average_precision_score(y, score):.3f})")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color=_OTHER, label="chance")
    roc_ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.axhline(float(np.mean(y == 1)), linestyle="--", color=_OTHER, label="prevalence")
    pr_ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize=8)
        ax.grid(alpha=0.3)
    return [Section("roc", "ROC curves", embed(roc_fig, "ROC curves of the top models") + note(caption)),
            Section("pr", "Precision-recall curves",
                     embed(pr_fig, "Precision-recall curves of the top models") + note(caption))]


def _confusion_section(y: np.ndarray, oof: dict[str, np.ndarray], leader: str | None, classes: list,
                       evaluation: str) -> Section:
    from sklearn.metrics import confusion_matrix

    if leader not in oof:
        return Section("confusion", "Confusion matrix", note(f"No {evaluation} predictions for the leader."))
    n = len(classes)
    matrix = confusion_matrix(y, np.asarray(oof[leader]).argmax(axis=1), labels=np.arange(n))
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(3.5 + 0.55 * n, 14)
    fig = figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the actual class")
    labels = [str(c) for c in classes]
    ax.set_xticks(np.arange(n), labels=labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(np.arange(n), labels=labels)
    ax.set(xlabel="Predicted class", ylabel="Actual class")
    if n <= MAX_ANNOTATED_CLASSES:
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, f"{count}\n{share[row, col]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[row, col] > 0.5 else "black")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    caption = (f"Leader {leader}, {evaluation}, predicting the most probable class; accuracy {accuracy:.3f}. "
               "Cells: row count and share of the actual class.")
    counts = pd.DataFrame(matrix, columns=labels)
    counts.insert(0, "actual \\ predicted", labels)
    body = embed(fig, f"Confusion matrix of {leader}") + note(caption) + table(counts, [""] * n)
    return Section("confusion", "Confusion matrix", body)


def _residuals_section(y: np.ndarray, oof: dict[str, np.ndarray], leader: str | None, evaluation: str) -> Section:
    if leader not in oof:
        return Section("residuals", "Residuals", note(f"No {evaluation} predictions for the leader."))
    pred = np.asarray(oof[leader], dtype="float64")
    residual = np.asarray(y, dtype="float64") - pred
    fig = figure(11, 4.2)
    scatter, hist = fig.subplots(1, 2, width_ratios=[3, 2])
    scatter.scatter(pred, residual, s=12, alpha=0.55, color=_LEADER, edgecolors="none")
    scatter.axhline(0, color="black", linewidth=1)
    scatter.set(xlabel="Predicted value", ylabel="Residual (actual - predicted)", title="Residuals vs predicted")
    hist.hist(residual, bins=min(40, max(10, len(residual) // 15)), color=_TIE, edgecolor="white")
    hist.axvline(0, color="black", linewidth=1)
    hist.set(xlabel="Residual", ylabel="Rows", title="Distribution of residuals")
    for ax in (scatter, hist):
        ax.grid(alpha=0.3)
    rmse, mae = float(np.sqrt(np.mean(residual**2))), float(np.mean(np.abs(residual)))
    spread = float(np.sum((y - np.mean(y)) ** 2))
    r2 = 1 - float(np.sum(residual**2)) / spread if spread > 0 else float("nan")
    caption = f"Leader {leader}, {evaluation}: RMSE {rmse:.4g}, MAE {mae:.4g}, R² {r2:.3f}."
    return Section("residuals", "Residuals", embed(fig, f"Residuals of {leader}") + note(caption))


def _search_section(trials: pd.DataFrame, task: str, fallback: Metric | None) -> Section:
    value_col = next((c for c in trials.columns if str(c).startswith("validation_")), None)
    heading = "Search history"
    if value_col is None or "state" not in trials:
        return Section("search", heading, note("No search trials were recorded."))
    metric = _metric(value_col.removeprefix("validation_"), task) or fallback
    states = trials["state"].astype(str).value_counts()
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    done = trials[(trials["state"] == "COMPLETE") & pd.to_numeric(trials[value_col], errors="coerce").notna()]
    if done.empty:
        return Section("search", heading, note(f"No completed search trials ({counts or 'no trials'})."))
    done = done.assign(**{value_col: pd.to_numeric(done[value_col])}).sort_values("number")
    values, numbers = done[value_col].to_numpy(dtype="float64"), done["number"].to_numpy()
    higher = metric.higher_is_better if metric else True
    shown, records = history_points(values, higher, MAX_HISTORY_TRIALS)
    fig = figure(9, 4.2)
    ax = fig.add_subplot()
    ax.scatter(numbers[shown], values[shown], s=22, color=_TIE, label="completed trial", zorder=2)
    best = values[records]
    # One extra point at the last trial: the line runs on from the last new best to the end.
    ax.step(numbers[np.append(records, len(values) - 1)], np.append(best, best[-1]), where="post", color=_LEADER,
            linewidth=2, label="best so far")
    ax.set(xlabel="Trial number", ylabel=f"{value_col}{_direction(metric)}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ranked = done.sort_values(value_col, ascending=not higher, kind="mergesort").head(TOP_TRIALS)
    columns = [c for c in ("number", value_col, "best_epoch", "duration_s", "params") if c in ranked]
    body = [embed(fig, "Search history: validation score per trial and best so far"),
            note(f"Validation score of each trial on the search holdout (search bookkeeping, not the leaderboard "
                  f"protocol). Trials: {counts}."
                  + (f" The chart shows {len(shown):,} of {len(values):,} completed trials, every new best among them."
                     if len(shown) < len(values) else "")),
            f"<h3>Best {len(ranked)} trials</h3>", table(ranked[columns], [""] * len(ranked))]
    return Section("search", heading, "\n".join(body))


def _param_importance_section(importances: dict[str, float] | None) -> Section:
    values = pd.Series(importances or {}, dtype="float64")
    return _bars_section("param-importance", "Hyperparameter importance", values, None,
                         "Importance of each hyperparameter for the search's validation score.",
                         "Not computed for this run: it needs completed search trials.")


def _feature_importance_section(frame: pd.DataFrame | None, sort_metric: str) -> Section:
    values = std = None
    if frame is not None and not frame.empty:
        index = frame["feature"].astype(str)
        values = pd.Series(frame["importance"].to_numpy(dtype="float64"), index=index)
        if "importance_std" in frame:
            std = pd.Series(frame["importance_std"].to_numpy(dtype="float64"), index=index)
    caption = (f"Out-of-fold permutation importance of the leader: the drop in {sort_metric} when one input "
               "column is shuffled. Error bars: one standard deviation over folds and repeats.")
    return _bars_section("feature-importance", "Feature importance", values, std, caption, "Not computed.")


def _bars_section(section_id: str, heading: str, values: pd.Series | None, std: pd.Series | None,
                  caption: str, missing: str) -> Section:
    """A horizontal bar chart of ``values`` (largest first), or ``missing`` as a note."""
    values = values.dropna() if values is not None else None
    if values is None or values.empty:
        return Section(section_id, heading, note(missing))
    values = values.sort_values(ascending=False, kind="mergesort").head(MAX_BARS)
    fig = figure(8, 1.2 + 0.3 * len(values))
    ax = fig.add_subplot()
    pos = np.arange(len(values))[::-1]
    err = None if std is None else std.loc[values.index].fillna(0).to_numpy()
    ax.barh(pos, values.to_numpy(), xerr=err, color=_TIE, edgecolor=_LEADER, capsize=3)
    ax.set_yticks(pos, labels=list(values.index.astype(str)))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("Importance")
    ax.grid(axis="x", alpha=0.3)
    return Section(section_id, heading, embed(fig, f"{heading} chart") + note(caption))


# -- helpers ------------------------------------------------------------------------------
def _metric(name: str, task: str) -> Metric | None:
    try:
        return get(name, task)
    except ValueError:
        return None


def _direction(metric: Metric | None) -> str:
    if metric is None:
        return ""
    return ", higher is better" if metric.higher_is_better else ", lower is better"


def _positive_score(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype="float64")
    return pred[:, 1] if pred.ndim == 2 else pred


