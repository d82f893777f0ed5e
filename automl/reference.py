"""The reference-models stage: H2O's families (GBM first, then GLM, DRF, XRT; GLM and SVM on images).

Each candidate is cross-validated on the run's protocol under a deadline. A candidate
starts only while the stage's share of the budget lasts, and only if its estimated cost
(from rows × the columns it trains on, corrected by how its family's first model did
against its estimate) fits in what is left of that share, less the time the later
row-bounded candidates (GLM, forests) are estimated to need; otherwise it is skipped with a
warning in the event log.
"""

from __future__ import annotations

from automl.devices import free_cores
from automl.evaluation import Evaluated, evaluate_candidate
from automl.models import reference_candidates
from automl.preprocess import dense_width
from automl.state import RunState

__all__ = ["fit_reference_models", "REFERENCE_SHARE", "FIRST_MODEL_SECONDS", "RESERVE_MARGIN"]

#: Reference models start only while less than this share of the budget is spent.
REFERENCE_SHARE = 0.4
#: The first model's least training time, even past the budget: a run must not end without a board.
FIRST_MODEL_SECONDS = 20.0
#: Time kept for the later row-bounded candidates, as a multiple of their estimates (on the 200k table the
#: forests took 9-16 s against 17 s estimated; 2x kept 69 s of the share's 120 s and skipped GBM_2).
RESERVE_MARGIN = 1.5


def fit_reference_models(state: RunState) -> list[Evaluated]:
    """Cross-validate the reference families the run allows; return the ones that were ranked."""
    budget, protocol = state.budget, state.protocol
    train_rows = len(protocol.folds[0][0])
    n_features = len(state.schema.features)
    share_end = budget.deadline - (1 - REFERENCE_SHARE) * budget.seconds
    cap = state.config.search.max_runtime_secs_per_model
    # Estimates are costed on the matrix each candidate sees: LightGBM splits the raw columns, the GLM and the
    # forests the one-hot encoding (280 columns of the synthetic table's 35). Each family's estimates are then
    # corrected by how its first model did against its estimate (a boosted model cut short by its deadline
    # says nothing of the GLM's cost).
    widths = {"trees": n_features, "dense": dense_width(state.x, state.schema) if state.schema.task != "image"
              else n_features}
    candidates = [c for c in reference_candidates(state.schema.task, state.config.seed, n_rows=train_rows,
                                                  n_features=n_features, n_jobs=free_cores(),
                                                  skewed_positive=state.skewed_target)
                  if c.algo in state.config.evaluation.algos]
    raw = [len(protocol.folds) * c.estimate_seconds(train_rows, widths.get(c.features, n_features))
           for c in candidates]
    corrections: dict[str, float] = {}
    done: list[Evaluated] = []
    for i, candidate in enumerate(candidates):
        estimate = raw[i] * corrections.get(candidate.algo, 1.0)
        # A candidate whose cost grows with the rows (boosting: it trains until its deadline on a large table)
        # leaves the later ones whose cost stops growing (the GLM and the forests train on row samples) their
        # estimated time: on 8M rows GBM_1 took the whole share and they were skipped for 6 s each. A row-bounded
        # candidate keeps nothing back: it costs about its estimate, and the order is the priority (Pima at 30 s
        # and the 10k table had skipped GLM_1, estimated 1-2 s, to keep time for the forests after it).
        bounded = 0.0 if candidate.max_rows is not None else sum(
            r * corrections.get(c.algo, 1.0) for c, r in zip(candidates[i + 1:], raw[i + 1:], strict=True)
            if c.max_rows is not None)
        end = share_end - RESERVE_MARGIN * bounded
        left = end - budget.clock()
        if done and (left <= 0 or estimate > left):
            state.events.warn("reference", f"skipped {candidate.model_id}: estimated {estimate:.0f}s, "
                                           f"{max(left, 0):.0f}s left of the reference models' share")
            continue
        # Every model stops by the end of the share, the first too: boosting on 8M rows would otherwise take the
        # whole budget (it stops early, keeping its best round). The first one gets at least
        # FIRST_MODEL_SECONDS even past the share: a run that starts late (a busy machine, a slow Prefect
        # start-up) still ends with a board, a little late.
        deadline = end if done else max(end, budget.clock() + FIRST_MODEL_SECONDS)
        if cap is not None:
            deadline = min(deadline, budget.clock() + cap)
        if state.schema.task != "image":  # the image references are plain scikit-learn pipelines
            candidate.fit_kwargs["deadline"] = deadline
        result = evaluate_candidate(state, candidate, "reference", deadline)
        if result is not None:
            done.append(result)
            corrections.setdefault(candidate.algo,
                                   max(0.25, min(4.0, (result.training_time_ms / 1000) / max(raw[i], 1e-3))))
    return done

