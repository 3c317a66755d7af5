"""benchflow's Hydra plugins.

Hydra instantiates plugins only from the ``hydra_plugins`` namespace, so the
classes named by ``_target_`` in ``conf/hydra/{launcher,sweeper}/*.yaml`` live
here; their logic lives in benchflow (``benchflow.sweeps.slurm.launcher``,
``benchflow.config``). Hydra imports this package on every start: keep it light.
"""
