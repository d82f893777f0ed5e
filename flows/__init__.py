"""Prefect flows around the ``automl`` library: orchestration only, no ML logic.

``flows.automl_flow.automl_flow``, ``flows.retrain.retrain_flow`` and the search workers that
fan out to a work pool, ``flows.search_worker.search_worker_flow``. Nothing is imported
here: ``flows.server`` must load before Prefect does (the CLI starts the API first).
"""
