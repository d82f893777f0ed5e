"""The engines' one stop rule (``automl/engines/stop.py``), as both engines feed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl.budget import Budget
from automl.config import RunConfig
from automl.engines import MAX_CONSECUTIVE_FAILURES, SearchJob, StopPolicy
from automl.engines.stop import MAX_REPEATS, Finished, StopRule
from automl.metrics import get
from automl.spaces import MLP_SPACE


def _rule(max_models: int | None = None, seconds: float = 600, keep_share: float = 0.0, finish: float = 0.0,
          overhead: float = 0.0, elapsed: float = 0.0) -> StopRule:
    job = SearchJob(RunConfig.from_options(max_models=max_models), MLP_SPACE, (), get("auc", "binary"), "s",
                    Path("."), 100, StopPolicy(1, finish, keep_share))
    now = [1000.0]
    budget = Budget(seconds, started=now[0] - elapsed, clock=lambda: now[0])
    return StopRule(budget, job, overhead=lambda: overhead)


def test_max_models_counts_only_trials_that_count():
    ran = [Finished("COMPLETE", 1.0)] * 3
    assert _rule(3).reason(ran) == "3 trials done"
    # Retried, surplus and repeated trials are no results: they do not use up --max-models.
    assert _rule(3).reason(ran[:2] + [Finished("FAIL", None, counts=False)]) is None


def test_a_sampler_that_only_repeats_itself_ends_the_search():
    repeats = [Finished("PRUNED", None, counts=False, repeat=True)] * MAX_REPEATS
    assert "space is spent" in _rule().reason([Finished("COMPLETE", 1.0)] + repeats)
    assert _rule().reason(repeats[1:] + [Finished("COMPLETE", 1.0)]) is None


def test_a_run_of_failures_stops_with_a_reason_that_names_it():
    failed = [Finished("FAIL", None)] * MAX_CONSECUTIVE_FAILURES
    assert "in a row failed" in _rule().reason(failed)
    assert _rule().reason([Finished("COMPLETE", 1.0)] + failed[1:]) is None
    # A retried trial between failures does not break the run: only counted trials are read.
    assert "in a row failed" in _rule().reason(failed[:5] + [Finished("FAIL", None, counts=False)] + failed[5:])


@pytest.mark.parametrize(("elapsed", "overhead", "stops"), [(0, 0, False), (99, 0, True), (90, 0, False),
                                                             (90, 8, True)])
def test_time_counts_the_next_trial_its_refit_and_the_proposals_wait(elapsed, overhead, stops):
    # 100 s budget, trials of 4 s, a refit of one trial, 1 s of outputs: 90 s elapsed leaves 10 s, enough; a
    # Gaussian process that takes 8 s to propose makes it too little. Past the budget it always stops.
    rule = _rule(seconds=100, finish=1.0, overhead=overhead, elapsed=elapsed)
    assert (rule.reason([Finished("COMPLETE", 4.0)]) == "time budget") is stops
    assert _rule(seconds=100, elapsed=100).reason([]) == "time budget"
