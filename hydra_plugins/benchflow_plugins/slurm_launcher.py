"""``hydra/launcher=slurm``: benchflow's Slurm launcher (logic in benchflow.slurm.launcher)."""

from __future__ import annotations

from benchflow.slurm.launcher import SlurmSweepLauncher


class BenchflowSlurmLauncher(SlurmSweepLauncher):
    """One Slurm job array per distinct resource request; see docs/slurm.md."""
