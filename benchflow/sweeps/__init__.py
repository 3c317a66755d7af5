"""Sweeps and clusters: many trials.

The Hydra callback that frames a multirun in MLflow (:mod:`.callback`), one Hydra
job's repetitions (:mod:`.jobs`), resuming what already finished
(:mod:`.resume`), what a sweep directory holds (:mod:`.manifest`), Slurm
(:mod:`.slurm`), and a sweep's logs and retention (:mod:`.log_bundle`,
:mod:`.retention`).
"""
