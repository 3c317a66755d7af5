"""Running one trial: the life of a trial from its validated spec to its result
on disk and in MLflow (:mod:`.trial`), in this process or in a watched worker
process (:mod:`.supervisor`, :mod:`.worker`) with hard limits, in an isolated
environment (:mod:`.isolation`); how a failure is described (:mod:`.failures`).
"""
