"""What the scheduled loop tells people: a Prefect event for each promotion, refused challenger, drift over the
threshold and failed run, and a message through a notification block when one is configured.

Events go to the Prefect API the flow runs against (its UI lists them under Events; an automation or a
deployment trigger can act on them: ``prefect.yaml`` retrains on ``automl.drift.detected``). Their resource is
the project: ``automl.project.<project>``. A notification block (any of Prefect's: a webhook, Slack, Teams, e-mail)
is named by the flow's ``notify`` parameter or ``$AUTOML_NOTIFY_BLOCK`` as ``<block-type-slug>/<block-name>``,
e.g. ``custom-webhook/ops``. A notification that cannot be sent is logged, never fails the run: the model and its
history are already written.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["PROMOTED", "KEPT", "DRIFT", "DRIFT_IN_TRAINING", "FAILED", "announce", "project_resource", "on_failure"]

PROMOTED = "automl.champion.promoted"
KEPT = "automl.champion.kept"
#: Emitted by scoring runs: what a deployment trigger retrains on.
DRIFT = "automl.drift.detected"
#: Emitted by a retrain whose training rows drifted from the champion's: for people, not a retrain trigger (a
#: refused challenger would otherwise retrain again and again on the same rows).
DRIFT_IN_TRAINING = "automl.drift.training-rows"
FAILED = "automl.run.failed"
#: The environment variable that names a notification block for every flow run that has no ``notify`` parameter.
NOTIFY_ENV = "AUTOML_NOTIFY_BLOCK"

_log = logging.getLogger(__name__)


def project_resource(project: str) -> dict[str, str]:
    """The project as a Prefect event resource (what automations match on)."""
    return {"prefect.resource.id": f"automl.project.{project}", "prefect.resource.name": project}


def announce(event: str, project: str, message: str, payload: dict[str, Any] | None = None,
             notify: str | None = None) -> None:
    """Emit ``event`` about ``project`` with ``message`` in its payload; send ``message`` through the notification
    block ``notify`` (else ``$AUTOML_NOTIFY_BLOCK``), if any."""
    from prefect.events import emit_event

    emit_event(event=event, resource=project_resource(project), payload={"message": message, **(payload or {})})
    block = notify or os.environ.get(NOTIFY_ENV)
    if block:
        _send(block, f"automl {project}: {event.rpartition('.')[2]}", message)


def _send(block: str, subject: str, body: str) -> None:
    from prefect.blocks.core import Block

    try:
        Block.load(block).notify(body=body, subject=subject)
    except Exception as exc:  # a notification service down must not fail a run whose outputs are written
        _log.warning("notification through block %r failed (%s: %s); the event was emitted", block,
                     type(exc).__name__, exc)


def on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """A flow's ``on_failure`` hook: announce the failed run (scheduled or not) with its one-line reason."""
    params = flow_run.parameters or {}
    project = str(params.get("project") or (params.get("options") or {}).get("project") or params.get("dataset")
                  or flow.name)
    message = f"{flow.name} run {flow_run.name} failed: {state.message or state.name}"
    try:
        announce(FAILED, project, message, {"flow_run_id": str(flow_run.id)}, params.get("notify"))
    except Exception as exc:  # the hook must not mask the run's own failure
        _log.warning("could not announce the failed run (%s: %s)", type(exc).__name__, exc)
