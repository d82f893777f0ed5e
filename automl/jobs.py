"""The run's jobs: what each stage gives the scheduler, and the run from its first model to its ensembles.

:func:`run_jobs` queues the reference portfolio (each family's first model is *required*: the scheduler keeps its
time from the jobs before it), the network search (in worker processes beside this one, or as slices of this
process's time on one core), and, as the queue runs, the jobs that follow from what it measured: a batch of GBM
search trials whenever nothing else waits (the queue's filler: both cores are busy until the end), the
cross-validation of every searched configuration that beats the family's best so far (GBM and networks; the
best network configuration found late too), then the ensembles and, under a holdout, the refits on all rows.
What the outputs, the ensembles and the refits will need is kept from the queue all along
(:func:`end_seconds`). Priorities (lower first): the families' first models, the rest of the portfolio in its
order, then search and evaluation jobs in turn, each family's next job later the more it already had.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from functools import partial
from typing import Any

from automl import boosting, ensembles, refit, search
from automl.config import ENSEMBLE_ALGO
from automl.devices import usable_cores
from automl.engines import TrialRecord
from automl.export import fitted_models
from automl.ranking import evaluate_candidate
from automl.reference import reference_portfolio
from automl.schedule import Job, JobCutShort, Pace, Scheduler
from automl.state import RunState

__all__ = ["run_jobs", "end_seconds", "REFIT_SHARE", "BATCH_SHARE", "MIN_BATCH_SECONDS",
           "MAX_BATCH_SECONDS", "FIRST_NETWORK_SHARE"]

#: A GBM search batch (or a network search slice in this process) lasts this share of the budget, within
#: [MIN_BATCH_SECONDS, MAX_BATCH_SECONDS]: long enough for several trials, short enough that the queue looks
#: again at what the other families found.
BATCH_SHARE = 0.05
MIN_BATCH_SECONDS, MAX_BATCH_SECONDS = 2.0, 30.0
#: Before any network trial ends, the first network model is expected to cost this share of the budget (5 folds
#: of a trial's size on a small table: Pima's first MLP ranked in 4-9 s of a 120 s run).
FIRST_NETWORK_SHARE = 0.08
#: A network's cross-validation may take this many times its whole estimate (its trial's best epoch on more
#: rows; the estimate comes from a trial that may have trained in a population, where it costs less), and at
#: least MIN_NETWORK_CAP seconds.
NETWORK_CAP_FACTOR, MIN_NETWORK_CAP = 2.5, 15.0
#: What the first network search slice in this process adds for TensorFlow's import and the search split.
FIRST_SLICE_SECONDS = 6.0
#: A retried reference model trains on this share of the rows its cut fold's pace says would fit.
RETRY_MARGIN = 0.7
#: A cut model is retried only on at least this share of its rows: fewer would rank a different model.
MIN_RETRY_ROWS = 0.2
#: The outputs: seconds for the report, the leaderboard and the exit, then per fitted model saved (each fold's
#: model and a refit on all rows: a network under 5-fold cross-validation is 5) and per feature (the leader's
#: permutation importance, which stops at its own deadline). The first and the last on the reference machine
#: (``automl.budget.PROBE_REFERENCE_SECONDS``): on another, the end's fixed seconds (``EXIT_SECONDS``) stay and the
#: rest follows the machine's slowness (``Budget.end_seconds``). Saving a model writes files and is costed as it is
#: (a machine 2.3 times as slow had ended its runs at 0.99-1.03 of their budget with 0.1 s a ranked model).
#: Fitted to the suite's 12 tables at 30 s and 120 s on a machine at slowness ~0.44 (2026-12-07: 0.03-0.11 s a
#: saved model, the exit 0.8-2.3 s): the end's time came out short on 2 runs of 24, by at most 0.6 s; with 0.1 s a
#: ranked model, on 11 at 120 s (penguins: 16 models, 65 saved, by 4 s: 1.028 of its budget).
OUTPUT_SECONDS, OUTPUT_SECONDS_PER_FITTED, OUTPUT_SECONDS_PER_FEATURE = 4.6, 0.06, 0.05
#: ... and the importance's seconds at most, and at most this share of the budget: the importance goes on to its
#: own deadline (the report's time) whatever is kept for it, and at 30 s help_baseline's 5 s kept its first
#: network from the queue.
OUTPUT_FEATURE_SECONDS, OUTPUT_FEATURE_SHARE = 5.0, 0.05
#: The level-2 stack's time is kept from the queue only where its estimate is at most this share of the budget:
#: at 30 s (2x GBM_1's time: 8 s on penguins) it took a third of what the queue could use, for a stack that joins
#: the board only when it beats level 1. Beyond this share it runs in time left over, if any. 0.1 kept 2.4 s of
#: penguins' 30 s, and its first network missed by 0.2 s; the stack was used in none of eight such runs.
LEVEL_TWO_SHARE = 0.05
#: The refits on all rows (under a holdout) keep their time from the queue only where it is at most this share of
#: the budget (as the level-2 stack): at 30 s on a 43k-row table GBM_1's refit (9 s) was kept from the first
#: model on, and every model but two was skipped. Beyond it they run in time left over, if any.
REFIT_SHARE = 0.2
#: A forest grows its trees in batches until its count or its deadline (it is ranked with the trees it has), so
#: its job is capped at this share of the budget: on loans (8k rows, 46 columns) at 120 s DRF_1 took 29.5 s and
#: XRT_1 22.5 s of the run's process for rows 8th and 10th of 11, and one searched GBM was ranked.
FOREST_SHARE = 0.1
#: Ensembles: seconds per base model and scored row, per stack (each fits its metalearner on every scored row:
#: mpls_stops at 120 s, 35k rows, 2.1 s for 9 models and 1.1 s for 5; costed on at most 10k rows, the three had
#: been kept 1 s and took 5.3 s, and the run ended at 1.054 of its budget).
ENSEMBLE_SECONDS_PER_CELL = 6.5e-6


def run_jobs(state: RunState) -> None:
    """Train everything the budget allows, by the scheduler's queue; the outputs follow (``automl.outputs``)."""
    run = _Run(state)
    run.start()
    run.scheduler.drain()
    run.finish()


def end_seconds(state: RunState) -> float:
    """Seconds kept for the end of the run: the ensembles (the level-2 stack where it is cheap enough, see
    :data:`LEVEL_TWO_SHARE`), the refits on all rows (holdout), the outputs."""
    return (outputs_seconds(state) + ensembles_seconds(state)
            + _if_small(refit.refit_estimate(state), REFIT_SHARE, state)
            + _if_small(ensembles.level_two_estimate(state), LEVEL_TWO_SHARE, state))


def _if_small(seconds: float, share: float, state: RunState) -> float:
    """``seconds`` where they are at most ``share`` of the budget, else none (that work runs in time left over)."""
    return seconds if seconds <= share * state.budget.seconds else 0.0


def outputs_seconds(state: RunState) -> float:
    """Seconds the outputs should take: export, the leader's importances, the report."""
    features = len(state.schema.features) if state.schema.task != "image" else 0
    # The stacks to come hard-link their bases: each saves its metalearner, as one fitted model.
    fitted = sum(len(fitted_models(e.model)) or 1 for e in state.evaluated) + 3
    budget = state.budget
    return (budget.end_seconds(OUTPUT_SECONDS) + OUTPUT_SECONDS_PER_FITTED * fitted
            + min(budget.slowness * OUTPUT_SECONDS_PER_FEATURE * features, OUTPUT_FEATURE_SECONDS,
                  OUTPUT_FEATURE_SHARE * budget.seconds))


def ensembles_seconds(state: RunState) -> float:
    """Seconds the three level-1 stacks should take."""
    return 0.5 + ENSEMBLE_SECONDS_PER_CELL * len(state.protocol.scored) * len(state.evaluated) * 3


class _Run:
    """One run's queue: the jobs it starts with, those it adds as results come in, and the end."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        # While the network search runs in workers its results may call for jobs: on an image run nothing else
        # waits, and the queue ended 65 s into a 300 s run while the workers went on.
        self.scheduler = Scheduler(state.budget, lambda: end_seconds(state), self._log, feed=self._feed,
                                   pending=lambda: self.networks and search.in_background(state))
        self.family = state.family.upper()
        self.networks = self.family in state.config.evaluation.algos
        # Network search slices run in this process only where no worker process searches (set in start()).
        self.slices = False
        self.gbm = "GBM" in state.config.evaluation.algos and state.schema.task != "image"
        self.evaluated: dict[str, set[str]] = {"gbm": set(), "net": set()}  # configurations queued or ranked
        self.best_queued: dict[str, float] = {}  # the best validation score queued for ranking, per search
        self.steps: dict[str, int] = {}
        self.batch_waiting = False
        self.gbm_search_over, self.gbm_finished = False, 0
        self.net_search_over, self.net_finished = False, 0
        self.reproducible = state.config.search.reproducible

    def _log(self, level: str, message: str) -> None:
        (self.state.events.warn if level == "warn" else self.state.events.add)("schedule", message)

    @property
    def batch_seconds(self) -> float:
        return min(MAX_BATCH_SECONDS, max(MIN_BATCH_SECONDS, BATCH_SHARE * self.state.budget.seconds))

    def _step(self, kind: str) -> float:
        """A priority after the portfolio: each kind's jobs take turns (2.0, 2.1, … per kind)."""
        n = self.steps.get(kind, 0)
        self.steps[kind] = n + 1
        return 2.0 + 0.1 * n

    def start(self) -> None:
        state = self.state
        self.search_started = state.budget.clock()
        search.start_workers(state)
        if state.workers is not None:
            self._limit_threads()
        for i, ref in enumerate(reference_portfolio(state)):
            # Each family's first model before the rest of the portfolio, in the portfolio's order.
            priority = (0.0 if ref.first_of_family else 1.0) + 0.01 * i
            self.scheduler.add(self._reference_job(ref.candidate, ref.estimate, priority, ref.first_of_family))
        self.slices = self.networks and not search.in_background(state)
        if self.networks:
            if not self.slices:
                # After GLM_1 (0.01): a GLM-started network's folds take GLM_1's fold models as their start.
                self.scheduler.add(Job(f"first {self.family}", self.family, 0.015, self._first_network_estimate,
                                       self._first_network, required=True, cap=self._cap(),
                                       # its trial's cap applies once it runs
                                       ready=partial(self._network_ready, True),
                                       prepare=partial(search.prepare_networks, state),
                                       prepare_seconds=partial(search.prepare_seconds, state), costly_first_fold=True))
            else:
                self.scheduler.add(self._slice_job(0.005, required=True))

    def _limit_threads(self) -> None:
        """This process trains beside the workers on the core they leave it: one TensorFlow thread (set before
        TensorFlow starts; LightGBM and scikit-learn read the load average, ``devices.free_cores``)."""
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

    def _cap(self) -> float | None:
        return self.state.config.search.max_runtime_secs_per_model

    # -- the reference portfolio ------------------------------------------------------------------------------

    def _reference_job(self, candidate: Any, estimate: float, priority: float, required: bool) -> Job:
        state = self.state

        def run(pace: Pace) -> Any:
            if state.schema.task != "image":  # the image references are plain scikit-learn pipelines
                candidate.fit_kwargs["deadline"] = pace.deadline
            return evaluate_candidate(state, candidate, "reference", pace=pace)

        def retry(job: Job, cut: JobCutShort) -> Job | None:
            rows = min(len(state.protocol.folds[0][0]), candidate.max_rows or math.inf)
            usable = self.scheduler.usable() if job.cap is None else min(self.scheduler.usable(), job.cap)
            fewer = int(rows * RETRY_MARGIN * max(usable, 0.0) / max(cut.projected, 1e-9))
            # As many rows as it had or more: the same job again (it was stopped by its own deadline, which the
            # time usable now no longer shows), not a cheaper one; one run said "queued again on 8344 of its 6400".
            if fewer < MIN_RETRY_ROWS * rows or fewer < 100 or fewer >= rows:
                return None
            smaller = replace(candidate, max_rows=fewer, fit_kwargs=dict(candidate.fit_kwargs))
            self._log("info", f"{candidate.model_id} queued again on {fewer} of its {rows} rows")
            again = self._reference_job(smaller, estimate * fewer / rows, priority, required)
            again.retry = None  # once
            return again

        cap = self._cap()
        if candidate.algo in ("DRF", "XRT") and not self.reproducible:  # where its trees stop must not vary there
            share = FOREST_SHARE * state.budget.seconds
            cap, estimate = (share if cap is None else min(cap, share)), min(estimate, share)
        return Job(candidate.model_id, candidate.algo, priority, estimate, run, required=required, cap=cap,
                   retry=retry)

    # -- the network search -----------------------------------------------------------------------------------

    def _network_ready(self, first: bool = False) -> bool:
        """A network configuration can be ranked: a trial completed (the ``first`` MLP needs none: the default
        configuration, :func:`automl.search.default_trial`), and (holdout) the workers have ended; in reproducible
        mode, the search has run to its count."""
        if search.in_background(self.state) and not search.evaluates_beside_workers(self.state):
            return False
        if self.reproducible and not self.net_search_over:
            return False
        return (first and self.state.family == "mlp") or bool(self._completed("net"))

    def _first_network_estimate(self) -> float:
        """The least that ranks a first network: the default MLP's for one epoch (it trains the epochs its time
        pays for; a GLM-started one keeps its start where they do no better); for CNNs, the cheapest completed
        configuration's (the job then ranks the best one that fits, :meth:`_first_network`)."""
        done = self._completed("net")
        if self.state.family == "mlp":
            return search.network_cost(self.state, search.default_trial(self.state, done), epochs=1)
        if done:
            return min(search.network_cost(self.state, t, least=True) for t in done)
        return FIRST_NETWORK_SHARE * self.state.budget.seconds

    def _network_cap(self, trial: TrialRecord) -> float | None:
        """A network's cross-validation is admitted at its least cost and may use up to its whole cost (its
        trial's best epoch on more rows), never more: the other families keep their turns."""
        if self.reproducible:  # a cap learnt from measured times would make the board depend on the machine
            return self._cap()
        correction = self.scheduler.corrections.get(self.family, 1.0)
        full = max(NETWORK_CAP_FACTOR * correction * search.network_cost(self.state, trial), MIN_NETWORK_CAP)
        return full if self._cap() is None else min(full, self._cap())

    def _first_network(self, pace: Pace) -> Any:
        """Rank the first network: the default MLP (the portfolio's first, cheapest configuration, whatever trials
        are back: at 30 s a packed trial chosen as the best that fit was stopped after its first fold), or the
        best completed CNN whose cost fits the job's time, else the cheapest (a CNN that took a minute as a trial
        must not leave the board without one). The best configuration is queued after it, as any better one is."""
        done, left = self._completed("net"), pace.deadline - pace.clock()
        if self.state.family == "mlp":
            trial = search.default_trial(self.state, done)
            self.evaluated["net"].add(search.configuration_key(trial))
            return self._rank_network(trial, pace)
        correction = self.scheduler.corrections.get(self.family, 1.0)
        costs = [correction * search.network_cost(self.state, t, least=True) for t in done]  # best first
        fitting = [t for t, cost in zip(done, costs, strict=True) if cost <= left]
        trial = fitting[0] if fitting else done[costs.index(min(costs))]
        if trial is done[0]:
            self._claim_best("net")
        else:  # ranked here, never queued again
            self.evaluated["net"].add(search.configuration_key(trial))
        return self._rank_network(trial, pace)

    def _rank_network(self, trial: TrialRecord, pace: Pace) -> Any:
        """Cross-validate ``trial``'s configuration within its network cap (the job's own cap is the user's)."""
        if (cap := self._network_cap(trial)) is not None:
            pace.deadline = min(pace.deadline, pace.start + cap)
        return search.evaluate_configuration(self.state, trial, pace)

    def _slice_job(self, priority: float, required: bool = False) -> Job:
        """A slice of the network search in this process (one core, or a budget too short for a worker)."""

        # The first slice also pays for TensorFlow's import and the search split (~5 s on 2 busy cores).
        seconds = self.batch_seconds * 2 + (FIRST_SLICE_SECONDS if required else 0.0)

        def run(pace: Pace) -> Any:
            self.batch_waiting = False
            # In reproducible mode one slice runs the search to its count: where slices end would change what
            # the sampler and the claims see.
            until = pace.deadline if self.reproducible else min(pace.deadline, pace.start + seconds)
            trials = search.search_slice(self.state, until)
            finished = sum(t.state != "RUNNING" for t in trials)
            # A slice that finished no trial after others had: --max-models is reached, or the space is spent.
            self.net_search_over = finished == self.net_finished > 0 or self.reproducible
            self.net_finished = finished
            return trials or None

        self.batch_waiting = True
        return Job(f"{self.family} search slice", self.family, priority, seconds, run, required=required,
                   elastic=True)

    # -- what follows from results ----------------------------------------------------------------------------

    def _completed(self, search_kind: str) -> list[TrialRecord]:
        """The search's completed trials, best first, each configuration once."""
        state = self.state
        if search_kind == "gbm":
            return search.best_configurations(state, boosting.FAMILY)
        return search.best_configurations(state, state.family, search.running_trials(state))

    def _claim_best(self, kind: str) -> TrialRecord | None:
        """The search's best configuration, marked queued, when it beats every one queued for ranking so far."""
        best = self._completed(kind)[:1]
        if not best or search.configuration_key(best[0]) in self.evaluated[kind]:
            return None
        queued = self.best_queued.get(kind)
        if queued is not None and self.state.metric.sign() * (best[0].value - queued) <= 0:
            return None
        self.evaluated[kind].add(search.configuration_key(best[0]))
        self.best_queued[kind] = best[0].value
        return best[0]

    def _network_job(self, trial: TrialRecord) -> Job:
        """Rank ``trial``'s configuration, at its turn among the network jobs."""
        return Job(search.network_id(self.state, trial), self.family, self._step("net"),
                   search.network_cost(self.state, trial, least=True), lambda pace: self._rank_network(trial, pace),
                   cap=self._cap(), prepare=partial(search.prepare_networks, self.state),
                   prepare_seconds=partial(search.prepare_seconds, self.state), costly_first_fold=True)

    def _claim_next(self) -> TrialRecord | None:
        """The best completed network configuration not queued for ranking yet, marked queued."""
        for trial in self._completed("net"):
            if (key := search.configuration_key(trial)) not in self.evaluated["net"]:
                self.evaluated["net"].add(key)
                return trial
        return None

    def _feed(self) -> None:
        """Before each choice: join a background search that has ended, and queue what the results call for: the
        best new configuration of each search when it beats the family's best queued so far, and a filler (a GBM
        batch or a network slice, in turns) when none waits."""
        state = self.state
        if search.in_background(state) and self._search_over():
            self._join()
        first_waiting = any(j.name == f"first {self.family}" for j in self.scheduler.queue)
        if self.networks and not first_waiting and self._network_ready() and (trial := self._claim_best("net")):
            self.scheduler.add(self._network_job(trial))
        if self.gbm and (self.gbm_search_over or not self.reproducible) and (trial := self._claim_best("gbm")):
            candidate = boosting.gbm_candidate(state, trial)

            def rank(pace: Pace, c: Any = candidate) -> Any:
                c.fit_kwargs["deadline"] = pace.deadline
                return evaluate_candidate(state, c, "boosting", pace=pace)

            self.scheduler.add(Job(candidate.model_id, "GBM", self._step("gbm-rank"),
                                   boosting.gbm_cost(state, trial), rank, cap=self._cap()))
        if self.batch_waiting or self.scheduler.usable() < MIN_BATCH_SECONDS:
            return
        fillers = []
        if self.gbm and not self.gbm_search_over:
            fillers.append("gbm-batch")
        if self.slices and not self.net_search_over:
            fillers.append("net-slice")
        if fillers:  # in turns: the kind with fewer jobs so far
            kind = min(fillers, key=lambda k: self.steps.get(k, 0))
            self.scheduler.add(self._batch_job() if kind == "gbm-batch" else self._slice_job(self._step(kind)))
        elif self.networks and not self.scheduler.queue and self._network_ready() and (trial := self._claim_next()):
            # Nothing else to do here (an image run: no GBM; the search in a worker): the next best network
            # configuration gets a row of its own rather than this core waiting for the search to end (on digits
            # it waited 77 s of 200).
            self.scheduler.add(self._network_job(trial))

    def _batch_job(self) -> Job:
        self.batch_waiting = True
        seconds = min(self.batch_seconds, self.scheduler.usable())
        return Job("GBM search batch", "GBM", self._step("gbm-batch"), seconds,
                   lambda pace: self._batch(pace, seconds), elastic=True)

    def _batch(self, pace: Pace, seconds: float) -> Any:
        self.batch_waiting = False
        # Reproducible mode: one batch to the count (a batch re-seeds the sampler where it resumes the study).
        until = pace.deadline if self.reproducible else min(pace.deadline, pace.start + seconds)
        trials = boosting.search_batch(self.state, until)
        finished = sum(t.state != "RUNNING" for t in trials)
        # A batch that finished no trial after others had: --max-models is reached, or the space is spent.
        self.gbm_search_over = finished == self.gbm_finished > 0 or self.reproducible
        self.gbm_finished = finished
        # Trials are search bookkeeping: the batch "ranks" something when a trial completed (not wasted).
        return [t for t in trials if t.state == "COMPLETE"] or None

    def _join(self) -> None:
        """Collect the background search; its workers' core-seconds go to the network family's ledger."""
        settings = self.state.config.search
        cores = max(1, settings.processes) * max(1, (usable_cores() - int(settings.background))
                                                 // max(1, settings.processes))
        seconds = self.state.budget.clock() - self.search_started
        search.join_search(self.state)
        self.scheduler.ledger.add(self.family, seconds, cores, ranked=True)
        self._log("info", f"network search: {settings.processes} worker process(es) for {seconds:.0f}s")

    def _search_over(self) -> bool:
        pool = self.state.workers
        return self.state.budget.clock() >= self._search_end() or (pool is not None and not pool.running())

    def _search_end(self) -> float:
        budget, stop = self.state.budget, search.background_stop(self.state)
        return budget.deadline - max(stop.finish_seconds, stop.keep_share * budget.seconds)

    # -- the end ----------------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Stack, refit, collect a background search still running; record the ledger and the run's CPU use."""
        state = self.state
        self._log("info", f"queue ended with {state.budget.left():.1f}s left, {end_seconds(state):.1f}s of it kept "
                          f"for the end (machine slowness {state.budget.slowness:.2f})")
        # The end's own queue: the level-1 stacks, a level-2 stack if it fits, the refits of the leader's members
        # (they read the leader), each kept time for by the run's queue (end_seconds).
        end = Scheduler(state.budget, lambda: outputs_seconds(state), self._log)
        end.ledger = self.scheduler.ledger
        if ENSEMBLE_ALGO in state.config.evaluation.algos:
            # The level-1 stacks cost a second or less and often lead: they run whenever the outputs' least time
            # is left, even where the queue's last jobs ran into the time kept for them.
            stacks = Job("ensembles", ENSEMBLE_ALGO, 0, ensembles_seconds(state),
                         lambda pace: ensembles.build_ensembles(state) or None, required=True)
            if state.budget.left() > ensembles_seconds(state) + state.budget.end_seconds(OUTPUT_SECONDS):
                end.run(stacks)
            else:
                end.add(stacks)
            end.add(Job("level-2 stack", ENSEMBLE_ALGO, 1, lambda: ensembles.level_two_estimate(state),
                        lambda pace: ensembles.stack_level_two(state, pace), cap=self._cap()))
        if refit.refit_estimate(state) > 0:
            end.add(Job("refits on all rows", "refit", 2, lambda: refit.refit_estimate(state),
                        lambda pace: refit.refit_full(state, pace.deadline) or None, required=True, cores=2,
                        elastic=True))
        end.drain()
        if search.in_background(state):  # only now: its last trials run on the other core meanwhile
            self._join()
        ledger = self.scheduler.ledger.as_dict()
        ledger["cpu_percent"] = self.scheduler.cpu_percent(0.0)
        state.schedule = ledger
        families = ", ".join(f"{k} {v['ranked']}/{v['jobs']} ranked, {v['core_seconds']:.0f} core-s"
                             + (f" ({v['wasted_core_seconds']:.0f} wasted)" if v["wasted_core_seconds"] else "")
                             + (f", {v['skipped']} skipped" if v["skipped"] else "")
                             for k, v in ledger["families"].items())
        self._log("info", f"jobs: {families}; CPU {ledger['cpu_percent']:.0f}% of one core so far")

