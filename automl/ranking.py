"""Ranking a candidate: cross-validate it on the run's protocol and add it to the run's evaluated models.

The reference models, the boosting search and the network search share this step. It lives above both the
protocol (:mod:`automl.evaluation`) and the run's state (:mod:`automl.state`), which it joins.
"""

from __future__ import annotations

from automl.evaluation import CutShortError, Evaluated, cross_validate
from automl.models import Candidate
from automl.schedule import JobCutShort, Pace
from automl.state import RunState

__all__ = ["evaluate_candidate"]


def evaluate_candidate(state: RunState, candidate: Candidate, stage: str, deadline: float | None = None,
                       pace: Pace | None = None) -> Evaluated | None:
    """Cross-validate ``candidate`` on the run's protocol and add it to the state; None if it failed.

    A :class:`automl.schedule.JobCutShort` from ``pace`` goes to the scheduler, which counts and may retry it.
    """
    protocol = state.protocol
    try:
        result = cross_validate(candidate, state.x, state.y, state.schema, protocol.folds, protocol.scored,
                                deadline, pace, state.metric)
    except JobCutShort:
        raise
    except CutShortError as exc:
        state.events.warn(stage, f"{exc}; not ranked")
        return None
    except Exception as exc:  # one failing model must not sink the run
        state.events.warn(stage, f"{candidate.model_id} failed: {type(exc).__name__}: {exc}")
        return None
    state.evaluated.append(result)
    state.events.add(stage, f"{candidate.model_id} {state.sort_metric}={result.model.metrics[state.sort_metric]:.4f} "
                            f"({result.training_time_ms / 1000:.1f}s), {state.budget.left():.0f}s left")
    return result
