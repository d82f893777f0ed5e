"""The Optuna engine: TPE sampling, Hyperband pruning, trials in one or many processes.

Storage: by default a journal file (``search/study.journal`` in the run folder; no
server, safe for local processes); with ``storage_url`` (``postgresql://…``) Optuna's
RDB storage, with heartbeats so that a trial whose worker died is retried, for workers
on several machines. Every finished trial stays in the storage, so running the same
project again continues the study (``max_trials`` counts the study's trials, old ones
included) and a killed run loses no completed trial.

With ``workers > 1`` the trials run in ``python -m automl.worker`` processes that
rebuild the search data from the ``spec`` kept in the study; this process only
supervises them, restarts recycled ones and reports progress.

The modules, from the bottom up: :mod:`.policy` (the workers' clock and exit codes), :mod:`.storage` (the one
adapter to Optuna's storages), :mod:`.ledger` (a trial's attributes and standing, the stop rule on a study),
:mod:`.recovery` (heartbeats, dead workers' trials), :mod:`.study`, :mod:`.claims` (duplicates, surplus),
:mod:`.objective` (one trial), :mod:`.asking` and :mod:`.rounds` (population rounds), :mod:`.loop` (one
process's trials), :mod:`.progress`, :mod:`.pool` (local worker processes), :mod:`.remote` (remote workers' end)
and :mod:`.stage` (the search stage's entry).
"""

from __future__ import annotations

from automl.engines.optuna_engine.ledger import Attr, StudyAttr, StudyStop
from automl.engines.optuna_engine.loop import population_size, work
from automl.engines.optuna_engine.policy import DEFAULT_POLICY, WorkerExit, WorkerPolicy
from automl.engines.optuna_engine.stage import search, start
from automl.engines.optuna_engine.storage import open_storage
from automl.engines.optuna_engine.study import TPE_STARTUP, open_study, param_importances, trials

__all__ = ["search", "start", "trials", "work", "open_study", "open_storage", "param_importances", "StudyStop",
           "WorkerPolicy", "WorkerExit", "DEFAULT_POLICY", "Attr", "StudyAttr", "population_size", "TPE_STARTUP",
           "SUPPORTS_WORKERS"]

SUPPORTS_WORKERS = True
