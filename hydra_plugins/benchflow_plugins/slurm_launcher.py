"""``hydra/launcher=slurm``: benchflow's Slurm launcher (logic in benchflow.sweeps.slurm.launcher).

Hydra imports this module on every start, whatever the launcher, so it must import
without the ``slurm`` extra (submitit, hydra-submitit-launcher): a core install
then gets a stand-in that says what to install, and only when a sweep selects
``hydra/launcher=slurm``.
"""

from __future__ import annotations

from typing import Any

# The modules of the `slurm` extra; an ImportError naming another is a bug, not an absence.
_EXTRA_MODULES = ("submitit", "hydra_plugins.hydra_submitit_launcher")

#: Why ``hydra/launcher=slurm`` cannot run here (None: it can).
MISSING_EXTRA: str | None = None

try:  # the module, not its class: Hydra registers every Launcher class named here
    from benchflow.sweeps.slurm import launcher as _launcher
except ImportError as exc:
    if not (exc.name or "").startswith(_EXTRA_MODULES):
        raise
    MISSING_EXTRA = (
        "hydra/launcher=slurm needs submitit and hydra-submitit-launcher, not installed "
        "here: pip install 'benchflow[slurm]'"
    )
    from hydra.plugins.launcher import Launcher

    class BenchflowSlurmLauncher(Launcher):
        """Stand-in without the ``slurm`` extra: selecting it says what to install."""

        def __init__(self, **params: Any) -> None:
            raise ImportError(MISSING_EXTRA)

        def setup(self, **kwargs: Any) -> None:
            raise ImportError(MISSING_EXTRA)

        def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
            raise ImportError(MISSING_EXTRA)

else:

    class BenchflowSlurmLauncher(_launcher.SlurmSweepLauncher):
        """One Slurm job array per distinct resource request; see docs/slurm.md."""
