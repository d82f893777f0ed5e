"""The scheduler's rules on a fake clock with fake costs (no timing asserts): priority order and fitting jobs to
the time left, the first-fold stop, every family's first model, the budget used to its end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automl.budget import Budget
from automl.schedule import Job, JobCutShort, Pace, Scheduler
from conftest import FakeClock


def _scheduler(seconds: float = 100.0, finish: float = 10.0) -> tuple[Scheduler, FakeClock, list[str]]:
    clock = FakeClock(1000.0)
    ran: list[str] = []
    return Scheduler(Budget(seconds, clock=clock), lambda: finish), clock, ran


def _job(name: str, priority: float, estimate: float, clock: FakeClock, ran: list[str], cost: float | None = None,
         family: str = "GBM", required: bool = False) -> Job:
    """A job estimated at ``estimate`` seconds that takes ``cost`` (default: its estimate) of the fake clock."""

    def run(pace: Pace) -> str:
        clock.advance(estimate if cost is None else cost)
        ran.append(name)
        return name

    return Job(name, family, priority, estimate, run, required=required)


def test_the_queue_runs_by_priority_and_skips_what_does_not_fit_the_time_left():
    sched, clock, ran = _scheduler(100, finish=10)
    sched.add(_job("late", 3.0, 5, clock, ran))
    sched.add(_job("first", 0.0, 30, clock, ran))
    sched.add(_job("too-long", 1.0, 70, clock, ran))  # 70 s after 30 s: only 60 s usable before the finish's 10
    sched.add(_job("second", 2.0, 50, clock, ran))
    sched.drain()
    assert ran == ["first", "second", "late"]
    assert sched.ledger.of("GBM").skipped == 1 and "too-long" in sched.ledger.skips[0]
    assert clock.now - 1000 <= 100 - 10  # the finish's time was never spent


def test_a_family_learns_its_cost_from_its_first_job():
    """GLM_1 took 4x its estimate: GLM_2, estimated like it, no longer fits; the GBM's estimate is untouched."""
    sched, clock, ran = _scheduler(100, finish=0)
    sched.add(_job("GLM_1", 0, 10, clock, ran, cost=40, family="GLM"))
    sched.add(_job("GLM_2", 1, 20, clock, ran, family="GLM"))
    sched.add(_job("GBM_1", 2, 20, clock, ran))
    sched.drain()
    assert ran == ["GLM_1", "GBM_1"]
    assert sched.corrections["GLM"] == pytest.approx(4.0) and "GBM" in sched.corrections
    assert sched.ledger.skips == ["GLM_2: estimated 80.0s, 60.0s usable"]


def test_every_family_gets_its_first_model_before_the_others_second():
    """Required jobs (a family's first model) keep their time from the jobs queued before them: a greedy queue
    would spend the budget on GBMs and leave the network nothing."""
    sched, clock, ran = _scheduler(100, finish=10)
    for i in range(6):
        sched.add(_job(f"GBM_{i}", i, 15, clock, ran, required=i == 0))
    sched.add(_job("MLP_first", 9, 30, clock, ran, family="MLP", required=True))
    sched.drain()
    assert "MLP_first" in ran and ran[0] == "GBM_0"
    # 90 s less the finish: the network's 30 s are kept with the pace's tolerance (37.5 s), so 3 GBMs of 15 s.
    assert sum(name.startswith("GBM") for name in ran) == 3


def test_where_the_required_jobs_do_not_all_fit_the_first_ones_run():
    """Churn at 30 s: every family's first model at 1.25x its estimate is more than the 25 s usable. Keeping time
    for all of them left none for any ("skipped GBM_1: estimated 5.3s, 0.0s usable"), and the board had one row."""
    sched, clock, ran = _scheduler(30, finish=5)
    for name, priority, seconds in (("GBM_1", 0.0, 5), ("MLP_first", 0.005, 10), ("GLM_1", 0.01, 1),
                                    ("DRF_1", 0.02, 6), ("XRT_1", 0.03, 6)):
        sched.add(_job(name, priority, seconds, clock, ran, family=name.split("_")[0], required=True))
    sched.add(_job("GBM_2", 1.0, 5, clock, ran))
    sched.drain()
    assert ran == ["GBM_1", "MLP_first", "GLM_1", "DRF_1"]  # 22 s of the 25 usable
    assert [s.split(":")[0] for s in sched.ledger.skips] == ["XRT_1", "GBM_2"]
    assert clock.now - 1000 <= 30 - 5


def test_a_required_job_that_is_not_ready_keeps_its_time_and_runs_when_ready():
    sched, clock, ran = _scheduler(100, finish=10)
    trial_done = {"at": 1040.0}
    first = _job("MLP_first", 0, 20, clock, ran, family="MLP", required=True)
    first.ready = lambda: clock.now >= trial_done["at"]
    sched.add(first)
    for i in range(10):
        sched.add(_job(f"GBM_{i}", 1 + i, 10, clock, ran))
    sched.drain(wait=lambda seconds: clock.advance(seconds))
    assert "MLP_first" in ran and ran.index("MLP_first") == 4  # ready after the 4th GBM (40 s)
    assert len(ran) == 8  # 7 GBMs x 10 s + 20 s = 90 s


def test_a_model_whose_first_fold_predicts_an_overrun_stops_after_that_fold():
    """Five folds of 8 s where 20 s are allowed: the first fold says so, the four others never train."""
    from automl.evaluation import cross_validate
    from automl.models import Candidate
    from automl.preprocess import Schema

    sched, clock, _ = _scheduler(100, finish=70)  # 30 s usable
    fits: list[int] = []

    class Slow:
        def fit(self, x, y, deadline=None):
            clock.advance(8.0)
            fits.append(len(y))
            return self

        def predict(self, x):
            return np.zeros(len(x))

    x = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=["a", "b", "c"])
    y = x["a"].to_numpy()
    schema = Schema("regression", "y", ["a", "b", "c"], [], [])
    folds = [(np.setdiff1d(np.arange(50), np.arange(i, 50, 5)), np.arange(i, 50, 5)) for i in range(5)]
    candidate = Candidate("SLOW_1", "GBM", Slow, features="dense")
    retried: list[Job] = []

    def run(pace: Pace):
        return cross_validate(candidate, x, y, schema, folds, pace=pace)

    def retry(job: Job, cut: JobCutShort) -> Job | None:
        retried.append(job)
        assert (cut.done, cut.total, cut.projected) == (1, 5, pytest.approx(40.0))
        return None

    sched.add(Job("SLOW_1", "GBM", 0, 10.0, run, retry=retry))  # estimated 10 s: it starts
    sched.drain()
    assert len(fits) == 1 and retried
    assert sched.ledger.of("GBM").wasted_core_seconds == pytest.approx(8.0)
    assert sched.corrections["GBM"] == pytest.approx(4.0)  # learned from the pace: 40 s projected for 10 estimated


def test_pace_gives_each_fold_its_share_and_tolerates_a_near_miss():
    clock = FakeClock(0.0)
    pace = Pace("m", start=0.0, deadline=50.0, clock=clock)
    assert pace.fold_deadline(0, 5) == 10.0
    clock.advance(20.0)  # the first fold started late or ran long: the others share what is left
    assert pace.fold_deadline(1, 5) == 20.0 + 30.0 / 4
    pace.check(1, 5, 12.0)  # 60 s projected: within the tolerance of 50
    with pytest.raises(JobCutShort):
        pace.check(1, 5, 14.0)


def test_a_network_pace_is_read_from_the_folds_after_its_first():
    """A network's first fold traces the graph its other folds reuse: 1.9 s, then 0.5 s each. Projected from the
    first fold, 5 folds "would take" 9.5 s of 4 s allowed; from the second, 3.9 s, and it goes on. A second fold as
    slow as the first still stops it."""
    pace = Pace("MLP_default", start=0.0, deadline=4.0, clock=FakeClock(0.0), costly_first_fold=True)
    pace.check(1, 5, 1.9)
    pace.check(2, 5, 2.4)
    pace.check(3, 5, 2.9)
    with pytest.raises(JobCutShort, match="stopped after fold 1 of 5"):
        Pace("MLP_default", start=0.0, deadline=4.0, clock=FakeClock(0.0)).check(1, 5, 1.9)
    slow = Pace("MLP_default", start=0.0, deadline=4.0, clock=FakeClock(0.0), costly_first_fold=True)
    slow.check(1, 5, 1.9)
    with pytest.raises(JobCutShort) as cut:
        slow.check(2, 5, 3.8)
    assert cut.value.projected == pytest.approx(3.8 + 3 * 1.9)


@pytest.mark.parametrize("seconds", [30.0, 120.0, 600.0, 3600.0])
def test_the_budget_is_used_to_its_end(seconds):
    """A queue with a filler (a search batch re-queued while it fits) ends within the time kept for the
    outputs, and the outputs' estimate brings the run to its budget: 95-105 % of it."""
    clock = FakeClock(1000.0)
    budget = Budget(seconds, clock=clock)
    finish = 5.0 + 0.01 * seconds
    ran: list[str] = []
    state = {"waiting": False}

    def feed() -> None:
        if not state["waiting"] and sched.usable() >= 2.0:
            state["waiting"] = True
            batch = min(0.05 * seconds, sched.usable())

            def run(pace: Pace, s: float = batch) -> str:
                state["waiting"] = False
                clock.advance(min(s, pace.deadline - pace.start))
                ran.append("batch")
                return "batch"

            sched.add(Job("batch", "GBM", 2 + len(ran), batch, run))

    sched = Scheduler(budget, lambda: finish, feed=feed)
    sched.add(_job("GBM_1", 0, 0.1 * seconds, clock, ran, cost=0.13 * seconds, required=True))
    sched.add(_job("GLM_1", 0.1, 0.02 * seconds, clock, ran, family="GLM", required=True))
    sched.drain()
    clock.advance(finish)  # the outputs, as estimated
    assert 0.95 * seconds <= budget.elapsed() <= 1.05 * seconds
    assert {"GBM_1", "GLM_1", "batch"} <= set(ran)


def test_a_capped_job_ends_by_its_cap_whatever_its_preparation_took():
    """``--max-runtime-secs-per-model``: the job's deadline is its start plus the cap, counted after its
    ``prepare`` (TensorFlow's import), and the pace lets it project only CAP_SLACK_SECONDS past it."""
    from automl.schedule import CAP_SLACK_SECONDS

    sched, clock, ran = _scheduler(100, finish=0)
    seen: list[Pace] = []

    def run(pace: Pace) -> str:
        seen.append(pace)
        clock.advance(2)
        pace.check(1, 5, 2.0)  # 5 folds at 2 s each: 10 s, past the 5 s cap beyond its slack
        return "never"

    job = Job("MLP_1", "MLP", 0, 4.0, run, cap=5.0, prepare=lambda: clock.advance(7))
    assert sched.run(job) is None
    assert seen[0].deadline - seen[0].start == 5.0 and seen[0].start == 1007.0
    assert seen[0].slack == CAP_SLACK_SECONDS
    assert sched.ledger.of("MLP").wasted_core_seconds == 9.0  # the import's seconds are counted, not hidden
    # Without a cap the same pace goes on within PACE_TOLERANCE: 10 s projected of 40 s allowed.
    sched.run(Job("MLP_2", "MLP", 0, 4.0, run))
    assert seen[1].slack is None and seen[1].deadline - seen[1].start > 5.0


def test_a_job_starts_only_where_its_preparation_fits_beside_its_estimate():
    """A first network estimated at 2 s with 5 s usable is skipped while TensorFlow's 5 s import is still to come
    (it would find nothing left after it); once imported, the same job runs. A required job's preparation is
    kept from the required jobs after it too."""
    sched, clock, ran = _scheduler(20, finish=15)
    imported: list[bool] = []
    job = _job("first MLP", 0.0, 2.0, clock, ran, family="MLP")
    job.prepare, job.prepare_seconds = (lambda: imported.append(True)), (lambda: 0.0 if imported else 5.0)
    sched.add(job)
    sched.drain()
    assert ran == [] and "estimated 2.0s, 0.0s usable" in sched.ledger.skips[0]
    imported.append(True)
    sched.add(job)
    sched.drain()
    assert ran == ["first MLP"]
    sched, clock, ran = _scheduler(100, finish=0)
    first = _job("first MLP", 0.0, 10.0, clock, ran, family="MLP", required=True)
    first.prepare_seconds = lambda: 6.0
    sched.add(first)
    sched.add(_job("XRT_1", 1.0, 68.0, clock, ran, family="XRT", required=True))
    assert sched.kept(first) == 0.0  # 12.5 s + 6 s for the network leave 81.5 s, not XRT_1's 85 s: none is kept
    first.prepare_seconds = lambda: 0.0
    assert sched.kept(first) == pytest.approx(85.0)


def test_a_job_estimated_over_its_cap_is_skipped_with_the_reason():
    sched, clock, ran = _scheduler(100, finish=0)
    sched.add(Job("MLP_3", "MLP", 0, 30.0, lambda pace: ran.append("MLP_3"), cap=5.0))
    sched.add(_job("GBM_1", 1, 3, clock, ran))
    sched.drain()
    assert ran == ["GBM_1"]
    assert sched.ledger.skips == ["MLP_3: estimated 30.0s, over its 5s cap"]


def test_an_empty_queue_is_waited_on_while_a_background_search_may_still_call_for_jobs():
    # An image run: nothing waits but the search in the workers; a configuration it finds 40 s on is still ranked.
    sched, clock, ran = _scheduler(100, finish=10)
    searching = {"until": 1060.0}

    def feed() -> None:
        if clock() >= 1040.0 and "CNN_3" not in ran and not sched.queue:
            sched.add(_job("CNN_3", 2.0, 5, clock, ran, family="CNN"))

    sched.feed, sched.pending = feed, lambda: clock() < searching["until"]
    sched.drain(wait=lambda seconds: clock.advance(seconds))
    assert ran == ["CNN_3"] and clock() >= searching["until"]  # waited to the search's end, then drained
    idle, _, idle_ran = _scheduler(100, finish=10)
    idle.drain(wait=lambda seconds: pytest.fail("nothing pending: no wait"))
    assert idle_ran == []
