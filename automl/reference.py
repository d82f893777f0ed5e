"""The reference-models stage: H2O's families (GBM first, then GLM, DRF, XRT; GLM and SVM on images).

Each candidate is cross-validated on the run's protocol under a deadline. A candidate
starts only while the stage's share of the budget lasts, and only if its estimated cost
(its own estimate from rows × features, corrected by how the models before it did
against theirs) fits in what is left of that share; otherwise it is skipped with a
warning in the event log.
"""

from __future__ import annotations

import os

from automl.evaluation import Evaluated, evaluate_candidate
from automl.models import reference_candidates, skewed_positive
from automl.state import RunState

__all__ = ["fit_reference_models", "REFERENCE_SHARE", "FIRST_MODEL_SECONDS"]

#: Reference models start only while less than this share of the budget is spent.
REFERENCE_SHARE = 0.4
#: The first model's least training time, even past the budget: a run must not end without a board.
FIRST_MODEL_SECONDS = 20.0


def fit_reference_models(state: RunState) -> list[Evaluated]:
    """Cross-validate the reference families the run allows; return the ones that were ranked."""
    budget, protocol = state.budget, state.protocol
    train_rows = len(protocol.folds[0][0])
    n_features = len(state.schema.features)
    share_end = budget.deadline - (1 - REFERENCE_SHARE) * budget.seconds
    cap = state.config.search.max_runtime_secs_per_model
    correction, done = 1.0, []
    skewed = state.schema.task == "regression" and skewed_positive(state.y)
    for candidate in reference_candidates(state.schema.task, state.config.seed, n_rows=train_rows,
                                          n_features=n_features, n_jobs=_free_cores(), skewed_positive=skewed):
        if candidate.algo not in state.config.evaluation.algos:
            continue
        left = share_end - budget.clock()
        estimate = len(protocol.folds) * candidate.estimate_seconds(train_rows, n_features) * correction
        if done and (left <= 0 or estimate > left):
            state.events.warn("reference", f"skipped {candidate.model_id}: estimated {estimate:.0f}s, "
                                           f"{max(left, 0):.0f}s left of the reference models' share")
            continue
        # Every model stops by the end of the share, the first too: boosting on 8M rows would otherwise take the
        # whole budget (it stops early, keeping its best round). The first one gets at least
        # FIRST_MODEL_SECONDS even past the share: a run that starts late (a busy machine, a slow Prefect
        # start-up) still ends with a board, a little late.
        deadline = share_end if done else max(share_end, budget.clock() + FIRST_MODEL_SECONDS)
        if cap is not None:
            deadline = min(deadline, budget.clock() + cap)
        if state.schema.task != "image":  # the image references are plain scikit-learn pipelines
            candidate.fit_kwargs["deadline"] = deadline
        result = evaluate_candidate(state, candidate, "reference", deadline)
        if result is not None:
            done.append(result)
            correction = max(0.25, min(4.0, (result.training_time_ms / 1000) / max(estimate / correction, 1e-3)))
    return done


def _free_cores() -> int:
    """Cores for scikit-learn/LightGBM: those not busy with other work (load average), at least one."""
    cores = os.cpu_count() or 1
    try:
        others = max(0.0, os.getloadavg()[0] - 1)  # this process is one of the busy ones
    except OSError:
        others = 0.0
    return max(1, cores - int(others))
