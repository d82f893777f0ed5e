"""The boosting search: LightGBM configurations searched by the run's engine over ``spaces.GBM_SPACE``, and the
best ones ranked on the protocol as ``GBM_grid_<trial>`` rows (H2O's GBM grid, FLAML's LightGBM tuning).

It follows the reference models in the run's process, while the network search's worker processes train
networks beside it. Trials train on the search split (bounded in rows, see :func:`automl.search.search_data`),
raw columns and native categoricals, early-stopped on its validation rows, until :data:`TRIALS_END` of the
budget; the best :data:`TOP_CONFIGS` configurations are then cross-validated like the reference GBMs (early
stopping on a slice of each fold's training rows) while their estimates fit before :data:`EVALUATE_END`. Both
ends come earlier when the network search follows in this process (no workers train beside this one), and
where the refit stage's share and the outputs would not fit after them.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from automl.budget import FINISH_SECONDS, search_should_stop
from automl.devices import free_cores
from automl.engines import StopPolicy, get_engine
from automl.evaluation import Evaluated, evaluate_candidate
from automl.events import StageEvents
from automl.models import COSTS, Candidate, GradientBoosting, boosting_params
from automl.refit import refit_share
from automl.search import best_configurations, search_data, search_job
from automl.state import RunState

__all__ = ["search_boosting", "TRIALS_END", "EVALUATE_END", "TOP_CONFIGS"]

#: Boosting trials stop at this share of the budget (the reference models have its first 40 %).
TRIALS_END = 0.55
#: The best configurations' evaluations on the protocol end by this share of the budget.
EVALUATE_END = 0.65
#: The same two ends when the network search runs in this process after this one (no search workers: budgets
#: under ``state.WORKERS_MIN_BUDGET``, ``--workers 1``): the networks keep the half of the window after
#: EVALUATE_END_ALONE (a 40 s diabetes run had left them 2 s, not one network trial).
TRIALS_END_ALONE, EVALUATE_END_ALONE = 0.47, 0.52
#: How many of the best configurations get a leaderboard row.
TOP_CONFIGS = 3
FAMILY = "gbm"


def search_boosting(state: RunState) -> list[Evaluated]:
    """Search the GBM family and rank its best configurations; nothing when GBM is excluded or for images."""
    budget = state.budget
    if state.schema.task == "image" or "GBM" not in state.config.evaluation.algos:
        return []
    trials_end, evaluate_end = _ends(state)
    policy = StopPolicy(refit_trials=0.0, finish_seconds=FINISH_SECONDS,
                        keep_share=(budget.deadline - trials_end) / budget.seconds)
    if search_should_stop(budget, [], policy.refit_trials, policy.finish_seconds, policy.keep_share):
        state.events.add("boosting", f"no GBM search: {budget.elapsed():.0f}s of {budget.seconds:.0f}s spent, "
                                     f"past its trials' end at {trials_end - budget.started:.0f}s")
        return []
    job = search_job(state, family=FAMILY, stop=policy)
    data = search_data(state, FAMILY)
    state.events.add("boosting", f"{state.config.search.engine} search of GBM configurations on "
                                 f"{len(data.y_train)} rows until {trials_end - budget.started:.0f}s")
    trials = get_engine(state.config.search.engine).search(job, data, budget, StageEvents(state.events, "boosting"))
    state.trials += [replace(t, family=FAMILY) for t in trials]
    return _evaluate(state, len(data.y_train), evaluate_end)


def _ends(state: RunState) -> tuple[float, float]:
    """When the trials end and when the best configurations' evaluations must end (clock readings): at TRIALS_END
    and EVALUATE_END of the budget, earlier where the refit stage's share and the outputs would not fit after
    them (a 30 s run keeps 10 s for its outputs)."""
    budget, settings = state.budget, state.config.search
    networks_after = (settings.n_workers <= 1 and not settings.fan_out
                      and state.family.upper() in state.config.evaluation.algos)
    trials, evaluate = (TRIALS_END_ALONE, EVALUATE_END_ALONE) if networks_after else (TRIALS_END, EVALUATE_END)
    evaluate_end = min(budget.started + evaluate * budget.seconds,
                       budget.deadline - refit_share(state) * budget.seconds - FINISH_SECONDS)
    return evaluate_end - (evaluate - trials) * budget.seconds, evaluate_end


def _evaluate(state: RunState, search_rows: int, end: float) -> list[Evaluated]:
    """Cross-validate the best configurations while each one's estimate fits before ``end``."""
    budget, done = state.budget, []
    cap = state.config.search.max_runtime_secs_per_model
    fold_rows = len(state.protocol.folds[0][0])
    for trial in best_configurations(state, FAMILY)[:TOP_CONFIGS]:
        # A fold trains on more rows than the trial did, and early stopping then runs about as many more rounds.
        estimate = len(state.protocol.folds) * trial.duration_s * max(1.0, fold_rows / search_rows)
        left = end - budget.clock()
        if left <= 0 or (done and estimate > left):
            state.events.add("boosting", f"no time to rank GBM trial {trial.number}: estimated {estimate:.0f}s, "
                                         f"{max(left, 0):.0f}s left of its share")
            break
        deadline = end if cap is None else min(end, budget.clock() + cap)
        params, patience, log_target = boosting_params(trial.params)
        candidate = Candidate(f"GBM_grid_{trial.number}", "GBM",
                              partial(GradientBoosting, task=state.schema.task, params=params, patience=patience,
                                      seed=state.config.seed, n_jobs=free_cores(), log_target=log_target),
                              dict(trial.params), fit_kwargs={"deadline": deadline}, cost=COSTS["GBM"],
                              features="trees")
        result = evaluate_candidate(state, candidate, "boosting", deadline)
        if result is not None:
            done.append(result)
    return done
