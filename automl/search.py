"""The search stage: network configurations searched by an engine, and the best ones ranked on the protocol.

Trials train on a search split and are scored on its validation rows (search
bookkeeping, not leaderboard rows). With k-fold CV the split is a stratified 20 % of all
rows; with a holdout protocol it lies inside the protocol's training rows, so that no
configuration is chosen on the rows that rank it. Both parts are bounded in size
(``MAX_SEARCH_TRAIN_ROWS``, ``MAX_SEARCH_VAL_ROWS``): a trial costs the same on 200k or
10M rows, and so do the refits of the best configurations (a sample of as many rows of
each fold's training rows; scored on the protocol's rows like every model).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from automl import devices, warm, worker_files
from automl.bagging import take_rows
from automl.bodies import TTA_SHIFTS, predict_views
from automl.budget import FINISH_SECONDS, Budget
from automl.engines import SearchData, SearchJob, StopPolicy, TrialRecord, get_engine
from automl.evaluation import Evaluated, holdout_split
from automl.events import StageEvents
from automl.image_store import row_maxima
from automl.models import Candidate
from automl.preprocess import make_preprocessor
from automl.quiet import import_tensorflow
from automl.ranking import evaluate_candidate
from automl.schedule import Pace
from automl.spaces import MAX_EPOCHS, family_space
from automl.state import RunState

__all__ = ["start_workers", "in_background", "join_search", "search_slice", "running_trials", "keep_trials",
           "search_data", "search_job", "background_stop", "network_cost",
           "evaluate_configuration", "prepare_networks", "evaluates_beside_workers", "placement", "best_configurations",
           "configuration_key", "trial_model", "TOP_CONFIGS", "KEEP_SHARE", "REUSE_SECONDS", "reuse_seconds",
           "default_trial", "network_id", "DEFAULT_NUMBER", "prepare_seconds"]

#: How many of the best search configurations the background search keeps time for, under a holdout.
TOP_CONFIGS = 3
#: Share of the budget that the background search leaves, at least, for what follows it. Where this process
#: ranks configurations while the workers search ("beside"), only the end of the run: the worker keeps the
#: second core busy meanwhile. Where it ranks them only once the workers have ended ("after"), their refits too:
#: a network refit on 200k rows needs this process's TensorFlow, whose memory must not sit beside the workers'
#: (4.3 GB where 4 GB are allowed); with 10 % the best configuration's refit on the 200k table got 24 s, 3 epochs
#: on 128k rows, and scored 0.7947 where its search trial had 0.805.
KEEP_SHARE = {"beside": 0.05, "after": 0.2}
#: This process cross-validates networks while the workers search (TensorFlow in both) on tables of at most
#: this many cells (rows x features); on larger ones only once they have ended (see KEEP_SHARE).
BESIDE_WORKERS_CELLS = 5_000_000
#: Share of rows held out to score search trials; where the trials' own models are ranked (``_reuses_trials``),
#: a smaller one: those rows then only choose epochs and prune, and every row more trains the model ranked.
SEARCH_HOLDOUT, SEARCH_HOLDOUT_REUSED = 0.2, 0.1
#: Networks train on at most this many rows, in the search and in their refits: on 2 CPU cores a 100-epoch
#: MLP on 30,000 rows takes about a minute; more rows would leave no time for the search itself.
MAX_SEARCH_TRAIN_ROWS = 30_000
MAX_SEARCH_VAL_ROWS = 10_000
#: A network's refit trains on at most this many of a fold's training rows (see :func:`evaluate_configuration`).
MAX_REFIT_ROWS = 200_000
#: A refit trains its configuration's best epoch count only if its estimate fits in this share of its time.
REFIT_MARGIN = 0.8
#: Share of a fold's training rows each of its network's fits holds out to stop early on and keep its best epoch
#: by (``KerasNetwork.validation_share``): the search's best epoch count, on other rows, can be past the best on
#: these (a 1-layer net at learning rate 0.0145 refit for a fixed 15 epochs scored 0.553 CV AUC where its trial
#: had 0.654). Rows of the fold's own training part: its out-of-fold rows still rank it unseen.
REFIT_HELD_OUT = 0.15
#: A CNN trial trains at most the epochs that this share of the budget pays for (``_max_epochs``: ten trials or
#: more, pruned ones cheaper), at the default CNN's seconds per training image pixel and epoch on one CPU thread
#: (4.2 s an epoch of 4,000 28x28 images, ``bench/trial_speed.py --cnn``), and at least MIN_CNN_EPOCHS.
CNN_TRIAL_SHARE, CNN_SECONDS_PER_PIXEL, MIN_CNN_EPOCHS = 0.3, 1.3e-6, 20
#: Where trials' own models are ranked, a trial starts while this share of a typical one fits before the search's
#: end (the deadline then cuts it, keeping its best epoch so far): whole trials only left 22 % of a 300 s run unused.
PARTIAL_TRIAL_SHARE = 0.3
#: Seconds to rank a trial's own saved network on the holdout (load it, predict the holdout's rows), at least; and
#: a CNN's seconds of prediction per pixel (x channels, x test-time view) on one thread: the default CNN predicted
#: 2,000 images with TTA at 1.8e-7 (34x34 RGB) to 2.6e-7 (28x28 grey). On 4,000 RGB 34x34 images: 21 s.
REUSE_SECONDS, CNN_PREDICT_SECONDS_PER_PIXEL = 2.0, 3e-7
#: A run's first MLP, before any trial has come back, is the portfolio's first configuration (the search's first
#: warm start: :func:`default_trial`), ranked as ``MLP_default``; its number on no trial. At 30 s the workers'
#: first trials came back with 5-8 s left, too late to cross-validate one.
DEFAULT_NUMBER = -1
#: Seconds every fold's fit of a network costs beyond its epochs (its build, preprocessing, predictions), which a
#: trial's duration does not show when it trained in a population, and once a configuration the tracing of its
#: graph that the other folds reuse (automl.steps.reused_steps; churn, 1 epoch a fold: 0.9-1.4 s for the first
#: fold, 0.45-0.5 s for each after it; 0.8 s each when every fold traced its own); and the default's seconds per row and
#: epoch before any measurement (1 layer of 32 units at batch 32, 2 cores: 20 epochs took 0.9 s on 614 rows, 1.6 s
#: on 5,000, 8 s on 40,000).
FIT_SECONDS, TRACE_SECONDS, DEFAULT_ROW_EPOCH_SECONDS = 0.45, 0.6, 1.2e-5
#: TensorFlow's import in the run's process beside a search worker (2 cores), on the reference machine
#: (``automl.budget.PROBE_REFERENCE_SECONDS``): 8-11 s in 30 s runs; 4.7-5.6 s on a machine 2.3 times as fast.
IMPORT_SECONDS = 11.0
#: Bumped when a space changes meaning: a study searched over another space is not resumed.
SPACE_VERSION = 1


def start_workers(state: RunState) -> None:
    """Open the study and start the search's worker processes now, if it has any: they run trials from then on,
    beside the scheduler's jobs in this process, until their stop rule (:func:`search_job`) says the search is
    done. Remote workers (``state.remote``, started by the orchestrator after this) join the study opened here."""
    engine, settings = get_engine(state.config.search.engine), state.config.search
    if state.workers is not None:  # started already (the flow starts them before its fan-out)
        return
    parallel = settings.processes > 0 or settings.fan_out > 0  # remote workers join a study opened here
    if engine.SUPPORTS_WORKERS and parallel and state.family.upper() in state.config.evaluation.algos:
        state.workers = engine.start(search_job(state, with_spec=True), state.budget, state.events)
    warm.discard()  # the workers warmed up at start-up that the search did not take (fewer were needed)


def in_background(state: RunState) -> bool:
    """The network search runs in worker processes (local or remote) rather than as jobs of this process."""
    return state.workers is not None or state.remote is not None


def join_search(state: RunState) -> list[TrialRecord]:
    """Wait for the background search to end (its stop rule), collect its trials into the state; they are
    returned. Nothing to wait for when the search ran as jobs of this process."""
    if not in_background(state):
        return []
    engine = get_engine(state.config.search.engine)
    trials = engine.search(search_job(state, with_spec=True), None, state.budget, state.events, state.workers,
                           state.remote)
    state.workers = state.remote = None
    keep_trials(state, state.family, trials)
    return trials


def search_slice(state: RunState, deadline: float) -> list[TrialRecord]:
    """Search the run's network family in this process until ``deadline`` (a scheduler job); the study is
    resumed by each slice, so slices add up to one search. Returns the family's trials so far."""
    job = search_job(state, stop=StopPolicy(0.0, 0.0, 0.0))
    if state.search_cache.get("data") is None:
        state.search_cache["data"] = search_data(state)
    import_tensorflow(state.config.verbose is True)
    budget = Budget(max(deadline - state.budget.clock(), 0.0), clock=state.budget.clock)  # what the import left
    engine = get_engine(state.config.search.engine)
    with devices.trial_context(0, placement(state)):
        trials = engine.search(job, state.search_cache["data"], budget, StageEvents(state.events, "search"))
    keep_trials(state, state.family, trials)
    return trials


def keep_trials(state: RunState, family: str, trials: list[TrialRecord]) -> None:
    """The family's trials in the state become ``trials`` (a resumed study lists its earlier ones again)."""
    state.trials = [t for t in state.trials if t.family != family] + [replace(t, family=family) for t in trials]


def running_trials(state: RunState) -> list[TrialRecord]:
    """The network family's trials so far: those collected, or, while the background search runs, those its
    study holds now (read from its storage; every engine with workers has ``trials``)."""
    if not in_background(state):
        return [t for t in state.trials if t.family == state.family]
    if "job" not in state.search_cache:  # polled between jobs: the job (space hash, spec) is built once
        state.search_cache["job"] = search_job(state, with_spec=True)
    engine = get_engine(state.config.search.engine)
    return [replace(t, family=state.family) for t in engine.trials(state.search_cache["job"])]


def search_data(state: RunState, family: str | None = None) -> SearchData:
    """The search split of ``family`` (default: the run's network family), preprocessed by a preprocessor fitted
    on its training rows: dense float32 for networks, raw columns with native categoricals for "gbm"."""
    family, task = family or state.family, state.schema.task
    train, val = _search_rows(state)
    pre = make_preprocessor(state.schema, _features(family))
    x_train = pre.fit_transform(take_rows(state.x, train), state.y[train])  # target encoding cross-fits
    x_val = pre.transform(take_rows(state.x, val))
    if family != "gbm":
        x_train, x_val = x_train.astype("float32", copy=False), x_val.astype("float32", copy=False)
    return SearchData(x_train, state.y[train], x_val, state.y[val], task, state.n_classes, family,
                      state.config.search.tensorboard if family != "gbm" else None, _codes(state, family),
                      str(_trial_models(state)) if _reuses_trials(state, family) else None)


def _reuses_trials(state: RunState, family: str) -> bool:
    """A holdout run's CNN trials are ranked as they are: they trained on rows of the holdout's training part, and
    a CNN retrained on a fold's rows from scratch is only the same configuration again, slower (on 5,000 digits a
    trial at 0.021 was retrained for 14 of its 35 epochs and scored 0.043)."""
    return family == "cnn" and state.protocol.name == "holdout"


def _trial_models(state: RunState) -> Path:
    return state.output / "search" / "models"


def trial_model(state: RunState, trial: TrialRecord) -> Path | None:
    """The folder where ``trial``'s own network was saved, when it can be ranked as it is: saved whole by
    its worker, and its pixels scaled as the holdout's models scale them (the search split's training images have
    the same largest pixel value as the protocol's training part); else None."""
    path = _trial_models(state) / f"trial_{trial.number}"
    if not (_reuses_trials(state, state.family) and (path / "network.json").exists()):
        return None
    if "same_scale" not in state.search_cache:  # once per run, from each image's maximum (no copy of the images)
        brightest = row_maxima(state.x)
        state.search_cache["same_scale"] = brightest[_search_rows(state)[0]].max() == \
            brightest[state.protocol.folds[0][0]].max()
    return path if state.search_cache["same_scale"] else None


def _features(family: str) -> str:
    """The preprocessor's kind for a family (:func:`automl.preprocess.make_preprocessor`)."""
    return {"gbm": "trees", "mlp": "network"}.get(family, "dense")


def _codes(state: RunState, family: str) -> int:
    """Category code columns at the end of the family's matrix: one per categorical column for an MLP."""
    return len(state.schema.categorical) if _features(family) == "network" else 0


def default_trial(state: RunState, trials: list[TrialRecord]) -> TrialRecord:
    """The search's first warm start: its completed trial among ``trials`` if there is one, else as a trial not
    run yet, its duration costed (:data:`DEFAULT_ROW_EPOCH_SECONDS`). A run's first network: the cheapest
    configuration of the portfolio, ranked before any other (AutoGluon's default network, H2O's first DeepLearning)."""
    from automl.training import EPOCH_CHUNK, PATIENCE_CHUNKS

    if "default" not in state.search_cache:  # asked at every choice of the queue: the space is built once
        state.search_cache["default"] = search_job(state).warm_starts[0]
    params = dict(state.search_cache["default"])
    key = json.dumps(params, sort_keys=True, default=str)
    if ran := [t for t in trials if configuration_key(t) == key]:
        return ran[0]
    # A GLM-started network's refit tries EPOCH_CHUNK * PATIENCE_CHUNKS epochs after its start (_target_epochs).
    best = 0 if params.get("linear_start") else EPOCH_CHUNK * PATIENCE_CHUNKS
    seconds = len(_search_rows(state)[0]) * EPOCH_CHUNK * PATIENCE_CHUNKS * DEFAULT_ROW_EPOCH_SECONDS
    return TrialRecord(DEFAULT_NUMBER, "COMPLETE", math.nan, best, seconds, params, family=state.family)


def network_id(state: RunState, trial: TrialRecord) -> str:
    """The board's name for ``trial``'s configuration: ``MLP_<trial number>``, or ``MLP_default``."""
    return f"{state.family.upper()}_{'default' if trial.number == DEFAULT_NUMBER else trial.number}"


def _search_rows(state: RunState) -> tuple[np.ndarray, np.ndarray]:
    """The search split's training and validation rows (positions in the run's table), both bounded; drawn once
    per run (the costs of network jobs ask for them at every choice of the queue)."""
    if "rows" not in state.search_cache:
        state.search_cache["rows"] = _draw_search_rows(state)
    return state.search_cache["rows"]


def _draw_search_rows(state: RunState) -> tuple[np.ndarray, np.ndarray]:
    rows = state.protocol.folds[0][0] if state.protocol.name == "holdout" else np.arange(len(state.y))
    task, seed = state.schema.task, state.config.seed
    share = SEARCH_HOLDOUT_REUSED if _reuses_trials(state, state.family) else SEARCH_HOLDOUT
    fraction = min(share, MAX_SEARCH_VAL_ROWS / len(rows))
    train, val = (rows[i] for i in holdout_split(state.y[rows], task, fraction, seed))
    if len(train) > MAX_SEARCH_TRAIN_ROWS:
        train = train[np.sort(holdout_split(state.y[train], task, 1 - MAX_SEARCH_TRAIN_ROWS / len(train), seed)[0])]
    return train, val


def search_job(state: RunState, with_spec: bool = False, family: str | None = None,
               stop: StopPolicy | None = None) -> SearchJob:
    """What the engine searches; identical in the run and in every worker process (built from the state).

    ``with_spec``: add what worker processes need, when the run has any. ``family`` (default: the run's network
    family) other than the network family is searched in this process alone, in a study of its own
    (``<study>-<family>``), until ``stop`` says.
    """
    family = family or state.family
    config, protocol = state.config, state.protocol
    photos = state.schema.task == "image" and (state.schema.image_shape or [1])[-1] == 3
    space, warm_starts = family_space(family, family == "gbm" and state.skewed_target, _codes(state, family) > 0,
                                      photos, len(_search_rows(state)[0]) if family == "gbm" else None)
    identity = {"task": state.schema.task, "sort_metric": state.sort_metric,
                "direction": "maximize" if state.metric.higher_is_better else "minimize", "seed": config.seed,
                "protocol": protocol.name, "nfolds": protocol.nfolds, "family": family,
                "space": f"{SPACE_VERSION}-{hashlib.sha256(repr(space).encode()).hexdigest()[:12]}"}
    study_name = state.study_name
    if family != state.family:
        config, study_name = (config.replace(workers=1, fan_out=0, population=1, background=False),
                               f"{study_name}-{family}")
    parallel = config.search.processes > 0 or config.search.fan_out > 0 or config.search.storage
    spec = (worker_files.worker_spec(state, lambda: (search_data(state), search_job(state)))
            if with_spec and family == state.family and parallel else None)
    return SearchJob(config, space, warm_starts, state.metric, study_name, state.output / "search",
                     _max_epochs(state, family), stop or background_stop(state), identity, spec)


def _max_epochs(state: RunState, family: str) -> int:
    """A trial's most epochs: MAX_EPOCHS, or for a CNN what CNN_TRIAL_SHARE of the budget pays for at the default
    CNN's pace on one CPU thread (its cosine schedule anneals over them), at least MIN_CNN_EPOCHS."""
    if family != "cnn":
        return MAX_EPOCHS
    images = len(_search_rows(state)[0]) * math.prod(state.schema.image_shape or [1])
    affordable = CNN_TRIAL_SHARE * state.budget.seconds / (images * CNN_SECONDS_PER_PIXEL)
    return int(min(MAX_EPOCHS, max(MIN_CNN_EPOCHS, affordable)))


def background_stop(state: RunState) -> StopPolicy:
    """When the background search stops: the time it keeps is for this process to cross-validate its last
    configurations (k fits of a trial's size under CV; each of the best once under a holdout) and for the
    outputs, at least :data:`KEEP_SHARE` of the budget (more where networks wait for the workers to end)."""
    if _reuses_trials(state, state.family):  # each trial's model is ranked as it is, even one the deadline cut:
        # the search ends in time for the last one to be ranked
        return StopPolicy(0.0, FINISH_SECONDS + reuse_seconds(state), KEEP_SHARE["beside"], PARTIAL_TRIAL_SHARE)
    if evaluates_beside_workers(state):  # configurations are ranked as they come: the workers search to the end
        return StopPolicy(0.0, FINISH_SECONDS, KEEP_SHARE["beside"])
    cv = state.protocol.name == "cv"
    return StopPolicy(float(len(state.protocol.folds)) if cv else float(TOP_CONFIGS), FINISH_SECONDS,
                      KEEP_SHARE["after"])


def evaluates_beside_workers(state: RunState) -> bool:
    """Networks are cross-validated in this process while the background search runs (not only after it)."""
    return len(state.y) * max(len(state.schema.features), 1) <= BESIDE_WORKERS_CELLS


def network_cost(state: RunState, trial: TrialRecord, least: bool = False, epochs: int | None = None) -> float:
    """Estimated seconds to cross-validate ``trial``'s configuration on the protocol at its best epoch (every
    fold's fit, on up to :data:`MAX_REFIT_ROWS` rows); ``least``: for as many samples as its trial saw (on more
    rows, fewer epochs: what :func:`evaluate_configuration` trains at the least); ``epochs``: for that many epochs
    on the refit's rows."""
    if trial_model(state, trial) is not None:
        return reuse_seconds(state, trial.params)
    if epochs is not None:
        fit = _refit_seconds(state, trial) * _row_scale(state) * epochs / _target_epochs(trial)
    else:
        fit = _refit_seconds(state, trial) * (1.0 if least else _row_scale(state))
    return TRACE_SECONDS + len(state.protocol.folds) * (FIT_SECONDS + fit)


def reuse_seconds(state: RunState, params: dict[str, Any] | None = None) -> float:
    """Estimated seconds to rank a trial's own CNN on the holdout: its predictions of the holdout's images, once per
    test-time view (``params``' views; without them, the most a configuration may have)."""
    views = predict_views(params, "cnn") if params is not None else len(TTA_SHIFTS) + 1
    pixels = len(state.protocol.folds[0][1]) * math.prod(state.schema.image_shape or [1])
    return max(REUSE_SECONDS, pixels * views * CNN_PREDICT_SECONDS_PER_PIXEL)


def _row_scale(state: RunState) -> float:
    """A refit's rows over its trial's: refits train on more rows when the folds have them."""
    return max(1.0, min(len(state.protocol.folds[0][0]), MAX_REFIT_ROWS) / len(_search_rows(state)[0]))


def prepare_seconds(state: RunState) -> float:
    """Seconds :func:`prepare_networks` still takes: TensorFlow's import, where this process has not made it."""
    return 0.0 if "keras" in sys.modules else IMPORT_SECONDS * state.budget.slowness


def prepare_networks(state: RunState) -> None:
    """TensorFlow imported and the devices placed: seconds, once a process, before a network's first fit."""
    import_tensorflow(state.config.verbose is True)
    placement(state)


def evaluate_configuration(state: RunState, trial: TrialRecord, pace: Pace) -> Evaluated | None:
    """Rank ``trial``'s configuration on the protocol (a scheduler job); None when it failed or the deadline cut
    a fold short (an undertrained network would rank on the board as if it were this configuration)."""
    from automl.training import KerasNetwork

    prepare_networks(state)  # a no-op when the job's ``prepare`` did it before its time started
    if (saved := trial_model(state, trial)) is not None:
        return _rank_trial_model(state, trial, saved, pace)
    folds = len(state.protocol.folds)
    # Refits train on more rows than the trials when the folds have them (a sample drawn before preprocessing):
    # on the 200k table one configuration scored 0.8014 trained on 30k rows for its 45 epochs and 0.8074 on 128k
    # rows for 11 epochs, the same samples in the same 25 s (0.8098 with 25 epochs).
    scale = _row_scale(state)
    rows = min(len(state.protocol.folds[0][0]), MAX_REFIT_ROWS)
    target = _target_epochs(trial)
    epoch_seconds = folds * _refit_seconds(state, trial) / target * scale  # one epoch of every fold's fit
    available = pace.deadline - state.budget.clock() - TRACE_SECONDS - folds * FIT_SECONDS  # for the epochs
    epochs = _refit_epochs(trial, epoch_seconds, available, scale)
    if epochs * scale < target:
        if state.family == "cnn":  # a CNN trained for fewer epochs than its trial is a weaker model under its name
            state.events.warn("evaluate", f"trial {trial.number} not refit: {folds} fits of its {target} "
                                          f"epochs estimated at {network_cost(state, trial):.0f}s, {available:.0f}s "
                                          "left")
            return None
        state.events.warn("evaluate", f"{network_id(state, trial)} refits with {epochs} epochs on {rows} rows, "
                                      f"fewer samples than its {target} epochs on the search's rows: {folds} "
                                      f"fits estimated at {network_cost(state, trial):.0f}s, {available:.0f}s left")
    algo = state.family.upper()
    candidate = Candidate(
        network_id(state, trial), algo,
        lambda: KerasNetwork(trial.params, state.schema.task, epochs=epochs, seed=state.config.seed,
                             n_classes=state.n_classes, family=state.family, validation_share=REFIT_HELD_OUT,
                             n_codes=_codes(state, state.family), reuse_graph=folds > 1),
        {**trial.params, "epochs": epochs}, fit_kwargs={"deadline": pace.deadline}, features=_features(state.family),
        # A bounded sample, drawn before preprocessing: one-hot encoding all of a fold's rows first took
        # 1.7 GB at 800k rows, and 18 GB at 8M (the run was killed by the OOM killer).
        max_rows=MAX_REFIT_ROWS)
    with devices.trial_context(0, placement(state)):
        result = evaluate_candidate(state, candidate, "evaluate", pace=pace)
    if result is None:
        return None
    fits = [f.estimator for f in result.model.folds]
    # A fit the deadline cut before any validation is a network trained for fewer epochs than planned, unchecked:
    # it would rank as if it were this configuration. One that validated keeps its best held-out epoch so far,
    # and its out-of-fold rows score exactly that model: on loans a 5-fold network scoring 14.28 (GLM 15.14) was
    # dropped for one fold cut late.
    if any(fit.cut_short_ and not fit.history_ for fit in fits):
        state.evaluated.remove(result)
        state.events.warn("evaluate", f"{candidate.model_id} dropped: the deadline came during its refit")
        return None
    cut = [str(k + 1) for k, fit in enumerate(fits) if fit.cut_short_]
    kept = trial.params.get("linear_start") and not any(fit.best_epoch_ for fit in fits)
    state.events.add("evaluate", f"{candidate.model_id}: each fold kept its best epoch on its held-out rows "
                                 f"({', '.join(str(fit.best_epoch_) for fit in fits)} of at most {epochs})"
                                 + ("; its GLM start, at least as good out of fold" if kept else "")
                                 + (f"; fold {', '.join(cut)} cut by the deadline" if cut else ""))
    return result


def _rank_trial_model(state: RunState, trial: TrialRecord, saved: Path, pace: Pace) -> Evaluated | None:
    """Rank ``trial``'s own network on the holdout (its ``fit`` loads it: nothing trains again)."""
    from automl.training import KerasNetwork

    algo = state.family.upper()
    candidate = Candidate(network_id(state, trial), algo,
                          lambda: KerasNetwork(trial.params, state.schema.task, epochs=trial.best_epoch,
                                               n_classes=state.n_classes, family=state.family, pretrained=str(saved)),
                          {**trial.params, "epochs": trial.best_epoch}, features=_features(state.family))
    with devices.trial_context(0, placement(state)):
        result = evaluate_candidate(state, candidate, "evaluate", pace=pace)
    if result is not None:
        state.events.add("evaluate", f"{candidate.model_id}: trial {trial.number}'s own model (trained on "
                                     f"{len(_search_rows(state)[0])} rows of the holdout's training part, "
                                     f"{trial.best_epoch} epochs), ranked as it is, not trained again")
    return result


def best_configurations(state: RunState, family: str,
                        trials: list[TrialRecord] | None = None) -> list[TrialRecord]:
    """The family's completed trials (of ``trials``, default the state's), best first, each configuration once
    (Hyperband may run one configuration several times, more epochs each: its best run is kept)."""
    complete = [t for t in (state.trials if trials is None else trials) if t.family == family
                and t.state == "COMPLETE" and _target_epochs(t) > 0 and math.isfinite(t.value)]
    complete.sort(key=lambda t: (-state.metric.sign() * t.value, t.number))
    unique, seen = [], set()
    for t in complete:
        if (key := configuration_key(t)) not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def configuration_key(trial: TrialRecord) -> str:
    """What identifies a trial's configuration: its parameters as sorted JSON."""
    return json.dumps(trial.params, sort_keys=True, default=str)


def placement(state: RunState) -> devices.Placement:
    """Where networks train (decided once per run, by :mod:`automl.devices`)."""
    if state.placement is None:
        state.placement = devices.plan(devices.detect(), 1, state.config.search.distribute)
        devices.configure(state.placement)
        state.events.add("search", f"devices: {state.placement}")
    return state.placement


def _refit_epochs(trial: TrialRecord, epoch_seconds: float, available: float, scale: float = 1.0,
                  configs: int = 1) -> int:
    """The epochs a refit trains on ``scale`` times the rows its trial trained on, when one epoch of all its fits
    takes ``epoch_seconds``: at least as many samples as the trial saw to its best epoch (``best_epoch / scale``
    epochs), more, up to the best epoch, while this refit's share of REFIT_MARGIN of the ``available`` seconds
    (``configs`` refits still to come share them) pays for them; fewer when even those do not fit in
    REFIT_MARGIN of them (estimates from trials run beside others are off by up to 2x; a refit cut at the
    deadline is dropped, a shorter one is ranked as what it is)."""
    usable = REFIT_MARGIN * max(available, 0.0)
    target = _target_epochs(trial)
    same_samples = max(1, round(target / scale))
    paid = int(usable / max(configs, 1) / epoch_seconds)
    return max(1, min(target, max(same_samples, paid), int(usable / epoch_seconds)))


def _target_epochs(trial: TrialRecord) -> int:
    """The epochs a refit of ``trial`` aims at: its best epoch; for a network whose best was its start (the GLM of
    ``linear_start``, epoch 0), the epochs its trial tried after it, each fold's fit keeping the start unless one
    of them beats it on its held-out rows (on help_baseline both GLM-started warm starts kept their start, and
    the board was left without a network). 0 for a trial that never validated."""
    from automl.training import EPOCH_CHUNK, PATIENCE_CHUNKS

    return trial.best_epoch or (EPOCH_CHUNK * PATIENCE_CHUNKS if trial.params.get("linear_start") else 0)


def _refit_seconds(state: RunState, trial: TrialRecord) -> float:
    """Estimated seconds to train ``trial``'s configuration once, to its best epoch, without validation."""
    from automl.training import EPOCH_CHUNK, PATIENCE_CHUNKS

    epochs_run = min(trial.best_epoch + EPOCH_CHUNK * PATIENCE_CHUNKS, _max_epochs(state, state.family))
    return trial.duration_s * _target_epochs(trial) / max(epochs_run, 1)

