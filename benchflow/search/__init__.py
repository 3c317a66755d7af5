"""Search: the most load a service takes within its SLOs, and saturation sweeps.

``python -m benchflow search=capacity search.slo='[latency_ms.p99<=50]' ...``
runs probes — each a real trial, a child of the search's parent run — and
brackets, then interpolates, the largest rate (or concurrency) at which every
SLO holds (:mod:`.capacity`), judging each probe with the confidence interval
of its figures (:mod:`.slo`); ``search=saturation`` runs guidellm's sweep
(:mod:`.saturation`). Probes run here or as Slurm jobs and are reused from
MLflow on a rerun (:mod:`.probes`); the answer and the throughput–latency curve
go to the parent run (:mod:`.answer`, :mod:`.curve`). :mod:`.runner` is the
entry from the Hydra app. docs/capacity.md defines it all.
"""


def run_search(cfg):
    """The Hydra job of a search (``search.kind`` capacity or saturation)."""
    from benchflow.search.runner import run_search as run

    return run(cfg)
