"""The boosting search: LightGBM configurations searched by the run's engine over ``spaces.GBM_SPACE``, and the
best ones ranked on the protocol as ``GBM_grid_<trial>`` rows (H2O's GBM grid, FLAML's LightGBM tuning).

Both are scheduler jobs (:mod:`automl.jobs`): :func:`search_batch` runs trials until its deadline in a study that
each batch resumes (``<study>-gbm``), so batches add up to one search; :func:`gbm_candidate` is a configuration to
cross-validate like the reference GBMs (early stopping on a slice of each fold's training rows). Trials train on
the search split (bounded in rows, see :func:`automl.search.search_data`), raw columns and native categoricals,
early-stopped on its validation rows.
"""

from __future__ import annotations

from functools import partial

from automl.budget import Budget
from automl.devices import free_cores
from automl.engines import StopPolicy, TrialRecord, get_engine
from automl.estimators import GradientBoosting, boosting_params
from automl.evaluation import Evaluated
from automl.events import StageEvents
from automl.models import COSTS, Candidate
from automl.search import keep_trials, search_data, search_job
from automl.state import RunState

__all__ = ["search_boosting", "search_batch", "gbm_candidate", "gbm_cost", "FAMILY", "TOP_CONFIGS"]

FAMILY = "gbm"
#: How many of the best configurations :func:`search_boosting` ranks.
TOP_CONFIGS = 3


def search_boosting(state: RunState, seconds: float, top: int = TOP_CONFIGS) -> list[Evaluated]:
    """Search GBM configurations for ``seconds`` in this process, then rank the ``top`` best on the protocol: the
    family on its own, outside a run's scheduler (a notebook, the tests). Nothing when GBM is excluded or for
    images."""
    from automl.ranking import evaluate_candidate
    from automl.search import best_configurations

    if state.schema.task == "image" or "GBM" not in state.config.evaluation.algos:
        return []
    search_batch(state, state.budget.clock() + seconds)
    done = []
    for trial in best_configurations(state, FAMILY)[:top]:
        candidate = gbm_candidate(state, trial)
        candidate.fit_kwargs["deadline"] = state.budget.deadline
        if (result := evaluate_candidate(state, candidate, "boosting")) is not None:
            done.append(result)
    return done


def search_batch(state: RunState, deadline: float) -> list[TrialRecord]:
    """Run GBM trials in this process until ``deadline``; return the family's trials so far (every batch's)."""
    if state.search_cache.get(FAMILY) is None:
        state.search_cache[FAMILY] = search_data(state, FAMILY)
    data = state.search_cache[FAMILY]
    budget = Budget(max(deadline - state.budget.clock(), 0.0), clock=state.budget.clock)
    job = search_job(state, family=FAMILY, stop=StopPolicy(0.0, 0.0, 0.0))
    trials = get_engine(state.config.search.engine).search(job, data, budget, StageEvents(state.events, "boosting"))
    keep_trials(state, FAMILY, trials)
    return trials


def gbm_cost(state: RunState, trial: TrialRecord) -> float:
    """Estimated seconds to cross-validate ``trial``'s configuration: a fold trains on more rows than the trial
    did, and early stopping then runs about as many more rounds."""
    fold_rows = len(state.protocol.folds[0][0])
    search_rows = len(state.search_cache[FAMILY].y_train) if state.search_cache.get(FAMILY) else fold_rows
    return len(state.protocol.folds) * trial.duration_s * max(1.0, fold_rows / search_rows)


def gbm_candidate(state: RunState, trial: TrialRecord) -> Candidate:
    """``trial``'s configuration as a model to rank (``GBM_grid_<number>``); its fits get the job's deadline."""
    params, patience, log_target = boosting_params(trial.params)
    return Candidate(f"GBM_grid_{trial.number}", "GBM",
                     partial(GradientBoosting, task=state.schema.task, params=params, patience=patience,
                             seed=state.config.seed, n_jobs=free_cores(), log_target=log_target),
                     dict(trial.params), fit_kwargs={"deadline": None}, cost=COSTS["GBM"], features="trees")
