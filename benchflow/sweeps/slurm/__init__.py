"""Slurm: sweeps as job arrays through submitit (:mod:`.launcher`; what each job runs
on its node, :mod:`.remote`; each job as the launcher follows it,
:mod:`.sweep_job`; its trials on disk once it ended, :mod:`.job_trials`), what each
job asks for (:mod:`.request`), the plan and budget gate (:mod:`.plan`), the records
of submitted jobs (:mod:`.record`), ``benchflow status | stop``
(:mod:`.status`) and servers started as jobs (:mod:`.servers`).
"""
