"""Prefect flows around the ``automl`` library: orchestration only, no ML logic.

Lazy: ``flows.server`` must be importable before Prefect is (the CLI starts the API first).
"""

from __future__ import annotations

from typing import Any

__all__ = ["automl_flow", "retrain_flow"]


def __getattr__(name: str) -> Any:
    if name == "automl_flow":
        from flows.automl_flow import automl_flow

        return automl_flow
    if name == "retrain_flow":
        from flows.retrain import retrain_flow

        return retrain_flow
    raise AttributeError(f"module 'flows' has no attribute {name!r}")
