"""``mlflow.run_context_provider``: lineage tags on every MLflow run.

Registered as an entry point, so MLflow calls it for every run it creates in a
process where benchflow is installed — benchflow's own runs and runs a user
starts in a notebook alike: git commit/branch/dirty, host, Slurm ids and node
list, container digest, benchflow version, GPU model and driver.
"""

from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider


class BenchflowLineageContext(RunContextProvider):
    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        from benchflow.results import lineage

        try:
            return lineage.tags()
        except Exception:  # lineage must never stop a run from being created
            return {}
