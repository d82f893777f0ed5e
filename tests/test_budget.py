"""The time budget on a fake clock, and the rule for when the search must stop."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from automl import budget as budget_mod
from automl.budget import Budget, search_deadline, search_should_stop
from conftest import FakeClock


def test_budget_counts_from_creation():
    clock = FakeClock(100.0)
    budget = Budget(60, clock=clock)
    assert budget.started == 100.0 and budget.deadline == 160.0
    assert budget.elapsed() == 0.0 and budget.left() == 60.0
    clock.advance(25)
    assert budget.elapsed() == 25.0 and budget.left() == 35.0
    assert budget.deadline == 160.0


def test_left_never_goes_negative_but_elapsed_keeps_counting():
    clock = FakeClock(0.0)
    budget = Budget(10, clock=clock)
    clock.advance(15)
    assert budget.left() == 0.0
    assert budget.elapsed() == 15.0


def test_explicit_start():
    clock = FakeClock(50.0)
    budget = Budget(30, clock=clock, started=40.0)
    assert budget.elapsed() == 10.0 and budget.left() == 20.0 and budget.deadline == 70.0


def test_since_wall_time_counts_time_already_spent(monkeypatch):
    monkeypatch.setattr(budget_mod.time, "monotonic", lambda: 1_000.0)
    monkeypatch.setattr(budget_mod.time, "time", lambda: 5_000.0)
    budget = Budget.since_wall_time(120, started_at=4_990.0)  # the process started 10 s ago
    assert budget.started == 990.0 and budget.deadline == 1_110.0
    assert budget.seconds == 120


def test_since_wall_time_ignores_a_start_in_the_future(monkeypatch):
    # A wall clock stepped backwards must not grant extra time.
    monkeypatch.setattr(budget_mod.time, "monotonic", lambda: 1_000.0)
    monkeypatch.setattr(budget_mod.time, "time", lambda: 5_000.0)
    assert Budget.since_wall_time(60, started_at=5_030.0).started == 1_000.0


def test_since_wall_time_uses_the_monotonic_clock():
    budget = Budget.since_wall_time(60, started_at=time.time() - 10)  # a process that started 10 s ago
    assert budget.clock is time.monotonic
    # The 10 s already spent count (a budget that forgot them would show ~0 s), a wall-clock step later does not.
    assert 10.0 <= budget.elapsed() < 40.0 and budget.left() <= 50.0


def _budget(seconds: float, elapsed: float) -> Budget:
    clock = FakeClock(0.0)
    budget = Budget(seconds, clock=clock)
    clock.advance(elapsed)
    return budget


@pytest.mark.parametrize(("elapsed", "stop"), [(0, False), (84, False), (85.1, True), (100, True)])
def test_stop_when_one_more_trial_and_the_refit_no_longer_fit(elapsed, stop):
    # Trials of 3 s: one more trial + 2 refits = 9 s, plus 6 s to finish = 15 s needed.
    assert search_should_stop(_budget(100, elapsed), [3.0, 3.0, 3.0], refit_trials=2,
                              finish_seconds=6.0) is stop


def test_the_median_trial_ignores_a_slow_first_trial():
    # The first trial pays for warm-up (40 s); the median (2 s) is the typical length: 2 * 3 + 5 = 11 s.
    trials = [40.0, 2.0, 2.0, 2.0]
    assert search_should_stop(_budget(100, 88), trials, refit_trials=2, finish_seconds=5.0) is False
    assert search_should_stop(_budget(100, 90), trials, refit_trials=2, finish_seconds=5.0) is True


def test_without_trials_only_the_finish_time_counts():
    assert search_should_stop(_budget(30, 23), [], refit_trials=3, finish_seconds=6.0) is False
    assert search_should_stop(_budget(30, 25), [], refit_trials=3, finish_seconds=6.0) is True


@pytest.mark.parametrize(("elapsed", "stop"), [(60, False), (69.9, False), (70.1, True)])
def test_keep_share_reserves_part_of_a_long_budget(elapsed, stop):
    # Trials need 1 * (1 + 1) + 2 = 4 s, but 30% of 100 s is kept for what follows the search.
    assert search_should_stop(_budget(100, elapsed), [1.0], refit_trials=1, finish_seconds=2.0,
                              keep_share=0.3) is stop


def test_keep_share_does_not_cut_below_what_is_needed():
    # 10% of 100 s is 10 s, but one trial + refit + finish needs 20 s: the larger need wins.
    assert search_should_stop(_budget(100, 79), [5.0], refit_trials=2, finish_seconds=5.0, keep_share=0.1) is False
    assert search_should_stop(_budget(100, 81), [5.0], refit_trials=2, finish_seconds=5.0, keep_share=0.1) is True


def test_trials_end_before_the_share_kept_for_refits():
    # A trial that starts just before the search stops must not run into the 30 s kept for refits.
    budget = _budget(100, 65)
    assert search_deadline(budget, finish_seconds=10.0, keep_share=0.3) == pytest.approx(budget.deadline - 30)
    # Without a share, the finish reserve still binds.
    assert search_deadline(budget, finish_seconds=10.0, keep_share=0.0) == pytest.approx(budget.deadline - 10)


def test_a_refit_that_would_not_fit_trains_fewer_epochs_instead_of_being_dropped():
    from automl.engines import TrialRecord
    from automl.search import REFIT_MARGIN, _refit_epochs

    trial = TrialRecord(0, "COMPLETE", 0.8, best_epoch=40, duration_s=20.0)
    assert _refit_epochs(trial, epoch_seconds=30 / 40, available=100.0) == 40  # fits: the trial's own epochs
    # 5 fits estimated at 100 s with 50 s left: a share of the epochs that fits in REFIT_MARGIN of 50 s.
    epochs = _refit_epochs(trial, epoch_seconds=100 / 40, available=50.0)
    assert epochs == int(40 * REFIT_MARGIN * 50 / 100) and 1 <= epochs < 20
    assert _refit_epochs(trial, epoch_seconds=100 / 40, available=-3.0) == 1  # at least one epoch


def test_a_refit_on_more_rows_trains_the_trials_samples_and_more_epochs_while_its_share_pays():
    from automl.engines import TrialRecord
    from automl.search import REFIT_MARGIN, _refit_epochs

    trial = TrialRecord(0, "COMPLETE", 0.8, best_epoch=40, duration_s=20.0)
    # 4x the rows: 10 epochs see the trial's samples. One epoch costs 2 s.
    assert _refit_epochs(trial, epoch_seconds=2.0, available=10.0, scale=4.0) == int(REFIT_MARGIN * 10 / 2)
    assert _refit_epochs(trial, epoch_seconds=2.0, available=40.0, scale=4.0, configs=3) == 10  # its share: 8 s
    shared = int(REFIT_MARGIN * 200 / 3 / 2)  # its share of 200 s, 2 s an epoch
    assert _refit_epochs(trial, epoch_seconds=2.0, available=200.0, scale=4.0, configs=3) == shared
    assert _refit_epochs(trial, epoch_seconds=2.0, available=1000.0, scale=4.0) == 40  # never past the best epoch


def _drive(monkeypatch, state, budget: float, start_up: float, took: dict[str, float]) -> tuple[list[str], FakeClock]:
    """Run the scheduler's queue (``automl.jobs``) on a fake clock where each reference model takes ``took[algo]``
    seconds (at most until its deadline) and a GBM search batch its whole time; the models trained, in order."""
    from types import SimpleNamespace

    from automl import boosting, jobs

    clock = FakeClock(1e6)
    state.budget = Budget(budget, clock=clock, started=clock.now - start_up)
    trained: list[str] = []

    def train(state, candidate, stage, deadline=None, pace=None):
        clock.advance(min(took[candidate.algo], pace.deadline - clock.now))
        trained.append(candidate.model_id)
        return SimpleNamespace(training_time_ms=1000 * took[candidate.algo])

    def batch(state, deadline):
        clock.advance(deadline - clock.now)
        trained.append("batch")
        return []

    monkeypatch.setattr(jobs, "evaluate_candidate", train)
    monkeypatch.setattr(boosting, "search_batch", batch)
    jobs.run_jobs(state)
    return trained, clock


def test_every_family_trains_its_first_model_before_the_portfolio_goes_on(monkeypatch):
    """The 200k synthetic table at 300 s, each model taking what it took there (2026-12-04): the families' first
    models, then the other GBMs of the portfolio, then GBM search batches until the time kept for the end."""
    from automl.config import RunConfig
    from automl.jobs import end_seconds
    from automl.state import start

    rng = np.random.default_rng(0)
    n = 160_000
    frame = pd.DataFrame(rng.normal(size=(n, 30)).astype("float32"), columns=[f"x{i}" for i in range(30)])
    for j in range(5):
        frame[f"c{j}"] = pd.Categorical.from_codes(rng.integers(0, 50, n), [f"lvl{k}" for k in range(50)])
    frame["y"] = rng.integers(0, 2, n)
    state = start(RunConfig.from_options(target="y", max_runtime_secs=300, verbose=False,
                                         exclude_algos=["MLP"]), frame)
    assert state.protocol.name == "holdout"
    trained, clock = _drive(monkeypatch, state, 300, 3, {"GBM": 20.0, "GLM": 6.8, "DRF": 16.4, "XRT": 9.1})
    assert trained[:6] == ["GBM_1", "GLM_1", "DRF_1", "XRT_1", "GBM_2", "GBM_3"]
    assert "batch" in trained
    assert clock.now <= state.budget.deadline - end_seconds(state) + 1e-6


def test_boosting_that_trains_to_its_deadline_leaves_the_other_families_their_time(monkeypatch):
    """On 8M rows GBM_1 trained until its deadline and the GLM and forests were skipped: their first models are
    required, so the time their estimates need is kept from GBM_1's deadline."""
    from automl.config import RunConfig
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=1000, verbose=False,
                                         exclude_algos=["MLP"]))
    trained, _ = _drive(monkeypatch, state, 1000, 0, {"GBM": float("inf"), "GLM": 1.0, "DRF": 1.0, "XRT": 1.0})
    assert trained[:4] == ["GBM_1", "GLM_1", "DRF_1", "XRT_1"]


def test_the_level_two_stack_is_kept_time_for_only_where_it_is_a_small_share_of_the_budget(monkeypatch):
    """Penguins at 30 s: the stack's 8 s estimate (2x GBM_1's time) was kept from a queue of ~20 s usable, and the
    stack was not used; there it runs only in time left over."""
    from automl import ensembles
    from automl.config import RunConfig
    from automl.jobs import LEVEL_TWO_SHARE, end_seconds
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=30, verbose=False))
    monkeypatch.setattr(ensembles, "level_two_estimate", lambda state: 0.0)
    rest = end_seconds(state)
    monkeypatch.setattr(ensembles, "level_two_estimate", lambda state: 8.0)
    assert end_seconds(state) == rest  # 8 s of 30: not kept
    cheap = LEVEL_TWO_SHARE * 30
    monkeypatch.setattr(ensembles, "level_two_estimate", lambda state: cheap)
    assert end_seconds(state) == pytest.approx(rest + cheap)


def test_the_refits_are_kept_time_for_only_where_they_are_a_small_share_of_the_budget(monkeypatch):
    """Diamonds at 30 s under a holdout: GBM_1's refit on all rows (9 s) was kept from the first model on and every
    other model was skipped; there the refits run only in time left over, as the level-2 stack."""
    from automl import ensembles, refit
    from automl.config import RunConfig
    from automl.jobs import REFIT_SHARE, end_seconds
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=30, verbose=False))
    monkeypatch.setattr(ensembles, "level_two_estimate", lambda state: 0.0)
    monkeypatch.setattr(refit, "refit_estimate", lambda state: 0.0)
    rest = end_seconds(state)
    monkeypatch.setattr(refit, "refit_estimate", lambda state: 9.0)
    assert end_seconds(state) == rest  # 9 s of 30: not kept
    monkeypatch.setattr(refit, "refit_estimate", lambda state: REFIT_SHARE * 30)
    assert end_seconds(state) == pytest.approx(rest + REFIT_SHARE * 30)


def test_a_short_run_trains_every_family(monkeypatch):
    """Pima at 30 s with the start-up and training times measured in such a run (2026-12-05)."""
    from automl.config import RunConfig
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=30, verbose=False,
                                         exclude_algos=["MLP"]))
    trained, clock = _drive(monkeypatch, state, 30, 4, {"GBM": 1.5, "GLM": 0.2, "DRF": 2.0, "XRT": 1.8})
    assert trained[:4] == ["GBM_1", "GLM_1", "DRF_1", "XRT_1"]
    assert clock.now <= state.budget.deadline


@pytest.mark.parametrize(("left", "ranked"), [(100.0, 7), (30.0, 3), (5.0, 3)])
def test_the_first_cnn_is_the_best_configuration_that_fits_else_the_cheapest(monkeypatch, left, ranked):
    """Fake costs: the best trial (7) a CNN that would take 60 s to rank, the next (3) 20 s. With 100 s the best is
    ranked; with 30 s the best that fits; with 5 s, where none fits, the cheapest. The job's estimate is the
    cheapest's, so that the scheduler starts it whenever any network fits."""
    from automl import jobs, search
    from automl.config import RunConfig
    from automl.engines import TrialRecord
    from automl.schedule import Pace
    from automl.state import start

    state = start(RunConfig.from_options(dataset="digits", max_runtime_secs=120, verbose=False))
    assert state.family == "cnn"
    trials = [TrialRecord(7, "COMPLETE", 0.85, 20, 30.0, params={"filters": 64}),
              TrialRecord(3, "COMPLETE", 0.83, 20, 5.0, params={"filters": 16}),
              TrialRecord(5, "COMPLETE", 0.80, 20, 8.0, params={"filters": 32})]
    costs = {7: 60.0, 3: 20.0, 5: 25.0}
    run = jobs._Run(state)
    monkeypatch.setattr(run, "_completed", lambda kind: trials)
    monkeypatch.setattr(search, "network_cost", lambda state, trial, least=False: costs[trial.number])
    chosen: list[int] = []
    monkeypatch.setattr(run, "_rank_network", lambda trial, pace: chosen.append(trial.number))
    assert run._first_network_estimate() == 20.0
    clock = FakeClock(0.0)
    run._first_network(Pace("first CNN", 0.0, left, clock))
    assert chosen == [ranked]
    # The best is ranked now or stays to be claimed later; one ranked here is never queued again.
    assert (run._claim_best("net") is None) == (ranked == 7)


@pytest.mark.parametrize("back", ["none", "others", "its own"])
def test_the_first_mlp_is_the_portfolios_first_configuration_whatever_trials_are_back(monkeypatch, back):
    """The first MLP is ready before any trial is back, and ranks the search's first warm start: as
    ``MLP_default`` (costed from the rows) while no trial ran it, as its trial once one did. A packed trial that
    scored better is claimed after it, as any better configuration is; the default is never queued again."""
    from automl import jobs, search
    from automl.config import RunConfig
    from automl.engines import TrialRecord
    from automl.schedule import Pace
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=120, verbose=False))
    warm = dict(search.search_job(state).warm_starts[0])
    trials = {"none": [], "others": [TrialRecord(7, "COMPLETE", 0.85, 20, 30.0, params={"ensemble_size": 8})]}
    trials["its own"] = [*trials["others"], TrialRecord(0, "COMPLETE", 0.82, 15, 1.0, params=warm)]
    run = jobs._Run(state)
    monkeypatch.setattr(run, "_completed", lambda kind: trials[back])
    chosen: list[TrialRecord] = []
    monkeypatch.setattr(run, "_rank_network", lambda trial, pace: chosen.append(trial))
    assert run._network_ready(first=True) and (run._network_ready() == (back != "none"))
    assert 0 < run._first_network_estimate() < 10.0  # 5 fits of 20 epochs on 614 rows
    run._first_network(Pace("first MLP", 0.0, 100.0, FakeClock(0.0)))
    assert [t.params for t in chosen] == [warm]
    expected = 0 if back == "its own" else search.DEFAULT_NUMBER
    assert chosen[0].number == expected
    assert search.network_id(state, chosen[0]) == ("MLP_0" if back == "its own" else "MLP_default")
    claimed = run._claim_best("net")
    assert (claimed.number if claimed else None) == (7 if back != "none" else None)
    assert run._claim_next() is None  # the default (its trial 0 included) is not queued again


def test_a_search_whose_cut_trials_are_kept_starts_one_while_part_of_a_trial_fits():
    clock = FakeClock(0.0)
    budget = Budget(300.0, clock=clock)
    clock.advance(250.0)  # 50 s left; trials take 60 s; 5 s for the outputs
    assert search_should_stop(budget, [60.0, 60.0], 0.0, 5.0)  # a whole trial no longer fits
    assert not search_should_stop(budget, [60.0, 60.0], 0.0, 5.0, trial_share=0.3)  # 18 s of one does
    clock.advance(35.0)
    assert search_should_stop(budget, [60.0, 60.0], 0.0, 5.0, trial_share=0.3)


@pytest.mark.parametrize(("projected", "retried"), [(200.0, True), (1.0, False)])
def test_a_cut_reference_model_is_retried_only_on_fewer_rows_than_it_had(projected, retried):
    """A model stopped after a fold is queued again on the rows the time usable pays for, only if that is fewer
    than it had: with time to spare for all of them the retry would be the job that was just stopped."""
    from automl import jobs
    from automl.config import RunConfig
    from automl.models import reference_candidates
    from automl.schedule import JobCutShort
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=120, verbose=False))
    glm = next(c for c in reference_candidates(state.schema.task, 1, len(state.y)) if c.algo == "GLM")
    job = jobs._Run(state)._reference_job(glm, 30.0, 0.0, True)
    again = job.retry(job, JobCutShort("GLM_1: stopped after fold 1 of 5", projected, 1, 5))
    assert (again is not None) == retried
    if retried:  # once, on fewer rows: its estimate shrinks with them
        assert again.retry is None and 0 < again.estimate < 30.0


def test_a_network_whose_best_was_its_glm_start_is_ranked_and_refit_for_the_epochs_its_trial_tried():
    """A trial whose best epoch was its start (the GLM of ``linear_start``, epoch 0) is a configuration to rank:
    its refit aims at the epochs the trial tried after the start (each fold keeps the start unless one beats it).
    A trial without that start which never validated (best epoch 0) is not ranked."""
    from automl.config import RunConfig
    from automl.engines import TrialRecord
    from automl.search import _refit_epochs, _target_epochs, best_configurations
    from automl.state import start
    from automl.training import EPOCH_CHUNK, PATIENCE_CHUNKS

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=120, verbose=False))
    started = TrialRecord(0, "COMPLETE", 0.67, 0, 2.0, params={"linear_start": True}, family="mlp")
    unvalidated = TrialRecord(1, "COMPLETE", 0.70, 0, 2.0, params={"linear_start": False}, family="mlp")
    assert [t.number for t in best_configurations(state, "mlp", [started, unvalidated])] == [0]
    assert _target_epochs(started) == EPOCH_CHUNK * PATIENCE_CHUNKS and _target_epochs(unvalidated) == 0
    assert _refit_epochs(started, epoch_seconds=0.1, available=100.0) == EPOCH_CHUNK * PATIENCE_CHUNKS


def test_a_forest_is_capped_at_its_share_of_the_budget_and_estimated_within_it():
    """A forest grows trees until its deadline and is ranked with those it has: on loans at 120 s DRF_1 and XRT_1
    took 52 s of the run's process for rows 8th and 10th of 11. Not in reproducible mode, where its tree count
    must not depend on the machine."""
    from automl import jobs
    from automl.config import RunConfig
    from automl.models import reference_candidates
    from automl.state import start

    reproducible = {"max_models": 4, "workers": 1}  # --max-models N --workers 1
    for options, cap in (({}, jobs.FOREST_SHARE * 120), (reproducible, None)):
        state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=120, verbose=False, **options))
        by_algo = {c.algo: c for c in reference_candidates(state.schema.task, 1, len(state.y))}
        run = jobs._Run(state)
        forest, glm = (run._reference_job(by_algo[algo], 30.0, 0.0, True) for algo in ("XRT", "GLM"))
        assert forest.cap == cap and forest.estimate == (30.0 if cap is None else cap)
        assert glm.cap is None and glm.estimate == 30.0


def test_the_ends_estimate_follows_the_machines_speed_and_keeps_its_fixed_seconds():
    """On a machine 2.3 times as fast as the reference, every 30 s run had ended at 84-95 % of its budget: the end
    took 0.4-0.8 of its estimate. Its fixed part (the flow's last calls, the exit) does not speed up."""
    fast, reference = Budget(30, slowness=0.43), Budget(30)
    assert reference.end_seconds(3.0) == 3.0
    assert fast.end_seconds(3.0) == pytest.approx(budget_mod.EXIT_SECONDS + 0.43 * (3.0 - budget_mod.EXIT_SECONDS))
    assert fast.end_seconds(1.0) == reference.end_seconds(1.0) == 1.0  # all of it fixed
    assert Budget(30, slowness=2.0).end_seconds(3.0) > 3.0


def test_the_machines_slowness_is_its_probes_time_over_the_references_within_bounds():
    reference = budget_mod.PROBE_REFERENCE_SECONDS
    assert budget_mod.measure_slowness(lambda: reference / 2) == pytest.approx(0.5)
    assert budget_mod.measure_slowness(lambda: reference * 100) == budget_mod.MAX_SLOWNESS  # busy for a moment
    assert budget_mod.measure_slowness(lambda: 0.0) == budget_mod.MIN_SLOWNESS
    # The real probe on this machine: a few milliseconds of work, the best of its repeats.
    seconds = budget_mod.probe_seconds()
    assert 0.0 < seconds < 1.0
    assert budget_mod.MIN_SLOWNESS <= budget_mod.measure_slowness() <= budget_mod.MAX_SLOWNESS


def test_the_outputs_and_tensorflows_import_are_estimated_at_the_machines_pace(monkeypatch):
    import sys

    from automl import jobs, search
    from automl.config import RunConfig
    from automl.state import start

    state = start(RunConfig.from_options(dataset="diabetes", max_runtime_secs=30, verbose=False))
    assert "machine: fixed work takes" in " ".join(e["message"] for e in state.events.rows)
    state.budget = Budget(30, slowness=1.0)
    features = len(state.schema.features)
    assert jobs.outputs_seconds(state) == pytest.approx(
        jobs.OUTPUT_SECONDS + jobs.OUTPUT_SECONDS_PER_FITTED * 3 + jobs.OUTPUT_SECONDS_PER_FEATURE * features)
    reference = jobs.outputs_seconds(state)
    # Each fitted model is saved: five for a model under 5-fold cross-validation, its folds and refit for one
    # refit on all rows; the estimate grows by theirs.
    from types import SimpleNamespace

    state.evaluated = [SimpleNamespace(model=SimpleNamespace(folds=[object()] * 5)),
                       SimpleNamespace(model=SimpleNamespace(folds=[object()], full=object()))]
    assert jobs.outputs_seconds(state) == pytest.approx(reference + 7 * jobs.OUTPUT_SECONDS_PER_FITTED)
    state.evaluated = []
    state.budget = Budget(30, slowness=0.43)  # the saves cost what they cost; the rest follows the machine
    saves = jobs.OUTPUT_SECONDS_PER_FITTED * 3
    assert jobs.outputs_seconds(state) == pytest.approx(
        budget_mod.EXIT_SECONDS + 0.43 * (reference - saves - budget_mod.EXIT_SECONDS) + saves)
    monkeypatch.delitem(sys.modules, "keras", raising=False)  # this process has not imported TensorFlow yet
    assert search.prepare_seconds(state) == pytest.approx(0.43 * search.IMPORT_SECONDS)
