"""The refit stage: under a holdout, the leader's boosted and linear members refit on all training rows.

A holdout protocol scores every model trained on the other rows; the rows it held out are then
unused at predict time. AutoGluon's ``refit_full`` and H2O's final models train on all of them: on
the 200k synthetic table (128k rows scored by a 32k holdout) a LightGBM refit on all 160k rows
gained 0.002-0.003 test AUC. Each refit keeps its model's settings (a boosted model: its
early-stopped rounds scaled by the rows, see :meth:`automl.estimators.GradientBoosting.for_refit`)
and replaces the model's predictions; its leaderboard metrics stay those of the holdout model,
which the exported folder keeps beside the refit (``fold_0/`` and ``full/``).

Refits start with the leader's most weighted member and only while their estimate (the model's
own training time, scaled by the rows and by what the family's first refit measured) fits before
the outputs' reserve; one cut short by the
deadline is discarded, unless it is a boosted model that had trained its holdout model's rounds by then.
Networks and forests are not refit: they train on bounded row samples anyway.
"""

from __future__ import annotations

import time
from typing import Any

from sklearn.base import clone

from automl import leaderboard as lb
from automl.bagging import BaggedModel, FoldModel
from automl.budget import FINISH_SECONDS, model_deadline
from automl.config import ENSEMBLE_ALGO
from automl.evaluation import Evaluated
from automl.outputs import board_rows
from automl.state import RunState

__all__ = ["refit_full", "refit_estimate", "REFIT_ALGOS", "MIN_EXTRA_ROWS", "REFIT_COST_FACTOR"]

#: Families refit on all rows. Networks and forests grow on bounded row samples (30,000 rows; 20,000 a tree):
#: more rows change little (a DRF refit on the 200k table: -0.0006 test AUC, against +0.0017/+0.0024 for GBMs).
REFIT_ALGOS = ("GBM", "GLM")
#: A refit is worth its time only when the holdout adds at least this share to the rows trained on.
MIN_EXTRA_ROWS = 0.1
#: Refits kept time for: the leader-to-be's most weighted members (on the 200k table one LightGBM refit on 160k
#: rows takes 17-28 s on 2 busy cores).
REFIT_MEMBERS = 2
#: A family's first refit's seconds ≈ this × the model's training seconds × the row ratio (no early-stopping
#: slice to score, but more rounds on more rows: refit/fit 1.42-1.53 for the three GBMs at 160k/128k rows);
#: later refits of the family use the factor the first one measured.
REFIT_COST_FACTOR = 1.25


def refit_estimate(state: RunState) -> float:
    """Seconds the scheduler keeps for this stage: the estimated refits of the best model's first
    :data:`REFIT_MEMBERS` refittable members (0 without a holdout that adds enough rows, or nothing to refit)."""
    ratio = _row_ratio(state)
    if ratio - 1 < MIN_EXTRA_ROWS or not state.evaluated:
        return 0.0
    return sum(REFIT_COST_FACTOR * ratio * m.training_time_ms / 1000 for m in _members_by_weight(state)[:REFIT_MEMBERS])


def _row_ratio(state: RunState) -> float:
    """All training rows over the rows the holdout's models trained on (1.0 without a holdout)."""
    if state.protocol.name != "holdout":
        return 1.0
    return len(state.y) / len(state.protocol.folds[0][0])


def refit_full(state: RunState, deadline: float | None = None) -> list[str]:
    """Refit the leader-to-be's members on all rows while time allows (until ``deadline``, by default the time
    the outputs need before the budget's end); return the ids refit."""
    ratio = _row_ratio(state)
    if ratio - 1 < MIN_EXTRA_ROWS or not state.evaluated:
        return []
    deadline = state.budget.deadline - FINISH_SECONDS if deadline is None else deadline
    done: list[str] = []
    # Refit seconds over (row ratio x training seconds), per family: the first guess, then what this run measured
    # (models trained beside busy search workers; the refits run alone, 0.55-0.8 on the 200k table).
    factors: dict[str, float] = {}
    cap = state.config.search.max_runtime_secs_per_model
    for member in _members_by_weight(state):
        fit_seconds = ratio * member.training_time_ms / 1000
        estimate = factors.get(member.model.algo, REFIT_COST_FACTOR) * fit_seconds
        left = deadline - time.monotonic()
        if cap is not None and estimate > cap:
            state.events.add("refit", f"{member.model.model_id} not refit on all {len(state.y)} rows: estimated "
                                      f"{estimate:.0f}s, over --max-runtime-secs-per-model {cap:g}")
            continue
        if estimate > left:
            state.events.add("refit", f"no time to refit {member.model.model_id} on all {len(state.y)} rows "
                                      f"(estimated {estimate:.0f}s, {max(left, 0):.0f}s left)")
            continue
        started = time.perf_counter()
        full = _refit(member.model, state, ratio, model_deadline(deadline, cap))
        if full is None:
            state.events.warn("refit", f"refit of {member.model.model_id} cut short by the deadline; "
                                       "it keeps its holdout model")
            continue
        seconds = time.perf_counter() - started
        factors[member.model.algo] = seconds / max(fit_seconds, 1e-3)
        member.model.full = full
        member.model.params = {**member.model.params, "refit_rows": len(state.y)}
        done.append(member.model.model_id)
        cut = (f", cut short by the deadline at {full.estimator.best_iteration_} rounds"
               if getattr(full.estimator, "cut_short_", False) else "")
        state.events.add("refit", f"{member.model.model_id} refit on all {len(state.y)} rows "
                                  f"({seconds:.1f}s, estimated {estimate:.1f}s{cut}), {state.budget.left():.0f}s left")
    return done


def _members_by_weight(state: RunState) -> list[Evaluated]:
    """The best model's refittable members, most weighted first (the model itself when not an ensemble)."""
    by_id = {e.model.model_id: e for e in state.evaluated}
    best = by_id[lb.build(board_rows(state), state.schema.task, state.sort_metric)["model_id"].iloc[0]]
    if best.model.algo == ENSEMBLE_ALGO:
        weights: dict[str, Any] = best.model.params.get("weights", {})
        order = sorted((w, i) for i, w in weights.items() if w > 0)
        members = [by_id[i] for _, i in reversed(order)]
    else:
        members = [best]
    # A model that trained on a row sample (``max_rows``, see automl.evaluation.cross_validate) would not use more.
    # The image references are plain scikit-learn pipelines, without a for_refit of their own.
    return [m for m in members if m.model.algo in REFIT_ALGOS and m.model.full is None
            and "max_rows" not in m.model.params and hasattr(m.model.folds[0].estimator, "for_refit")]


def _refit(model: BaggedModel, state: RunState, ratio: float, deadline: float) -> FoldModel | None:
    """``model``'s one fold model trained again on every row, or None when the deadline cut it short."""
    fold = model.folds[0]
    preprocessor = clone(fold.preprocessor)
    estimator = fold.estimator.for_refit(ratio).fit(preprocessor.fit_transform(state.x, state.y), state.y,
                                                    deadline=deadline)
    # A boosted refit cut short is kept once it has the rounds its holdout model was validated at (its target
    # was those scaled by the rows): on more rows, as many rounds do no worse. On diamonds the log-target GBM's
    # refit ran past its estimate and was dropped, with the three members after it left no time.
    validated = getattr(fold.estimator, "best_iteration_", None)
    if getattr(estimator, "cut_short_", False) and (validated is None or estimator.best_iteration_ < validated):
        return None
    return FoldModel(preprocessor, estimator)
