"""Calibrations of a host or Slurm partition, as ``compare`` reads them back.

``benchflow calibrate`` (:mod:`benchflow.analysis.calibration`) logs each one as a
run of the ``benchflow-calibrations`` experiment, tagged with the host (and the
partition) its trials ran on, with one set of metrics per calibrated metric M:
``noise_cv.M`` (run-to-run CV), ``pair_sd.M`` (SD of interleaved pairs' log-ratios),
``drift_sd.M`` (SD of the level between blocks) and the minimal detectable effects
``mde.paired.N.M`` / ``mde.blocked.N.M``. :class:`Calibrations` finds the latest one
for the runs of a comparison; :meth:`Calibration.prior` is what a blocked row uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from benchflow.analysis.compare.statistics import BlockPrior

EXPERIMENT = "benchflow-calibrations"
ROLE = "calibration"
HOST_TAG, PARTITION_TAG = "benchflow.host", "slurm.partition"
CAL_PARTITION_TAG = "benchflow.partition"  # on a calibration run
FIGURES = ("noise_cv", "pair_sd", "drift_sd")


@dataclass
class Calibration:
    """One stored calibration: per metric, the figures of :data:`FIGURES`."""

    run_id: str
    host: str | None
    partition: str | None
    service: str | None
    at: float  # epoch seconds
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # figure -> metric -> v
    false_positive_rate: float | None = None

    @property
    def label(self) -> str:
        where = f"host {self.host}" if self.host else f"partition {self.partition}"
        day = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.at))
        return f"calibration {self.run_id[:8]} of {where} ({day})"

    def prior(self, metric: str) -> BlockPrior | None:
        sd = self.figures.get("drift_sd", {}).get(metric)
        return None if sd is None else BlockPrior(sd, self.label)

    @classmethod
    def from_run(cls, run) -> Calibration:
        tags, metrics = run.data.tags, run.data.metrics
        figures: dict[str, dict[str, float]] = {f: {} for f in FIGURES}
        for key, value in metrics.items():
            fig, _, metric = key.partition(".")
            if fig in figures and metric:
                figures[fig][metric] = float(value)
        return cls(
            run.info.run_id,
            tags.get(HOST_TAG),
            tags.get(CAL_PARTITION_TAG),
            tags.get("benchflow.service"),
            run.info.start_time / 1000,
            figures,
            metrics.get("false_positive_rate"),
        )


class Calibrations:
    """The latest calibration of the host (or partition) a comparison's runs ran on.

    ``pinned``: ``auto`` (look it up), ``none`` (use none) or a calibration run id.
    """

    def __init__(self, client, pinned: str = "auto") -> None:
        self.client = client
        self.pinned = pinned
        self._cache: dict[tuple[str, str], Calibration | None] = {}

    def for_runs(self, runs) -> tuple[Calibration | None, str]:
        """The calibration for these runs (both sides of one configuration), and why
        there is none when there is none."""
        if self.pinned == "none":
            return None, "calibrations not used (--calibration none)"
        if self.pinned != "auto":
            key = ("run", self.pinned)
            if key not in self._cache:
                self._cache[key] = Calibration.from_run(self.client.get_run(self.pinned))
            return self._cache[key], ""
        hosts = {r.tags.get(HOST_TAG) for r in runs}
        parts = {r.tags.get(PARTITION_TAG) for r in runs}
        keys = []  # the host's own calibration first, then its Slurm partition's
        if len(hosts) == 1 and None not in hosts:
            keys.append((HOST_TAG, next(iter(hosts))))
        if len(parts) == 1 and None not in parts:
            keys.append((CAL_PARTITION_TAG, next(iter(parts))))
        if not keys:
            named = sorted(h for h in hosts if h)
            return None, f"the runs come from {len(named)} hosts ({', '.join(named[:4])})"
        for key in keys:
            if key not in self._cache:
                self._cache[key] = self._latest(*key)
            if self._cache[key] is not None:
                return self._cache[key], ""
        return None, f"no calibration of {' or '.join(k[1] for k in keys)} in {EXPERIMENT}"

    def _latest(self, tag: str, value: str) -> Calibration | None:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            return None
        runs = self.client.search_runs(
            [exp.experiment_id],
            filter_string=(
                f"tags.`benchflow.role` = '{ROLE}' and tags.`{tag}` = '{value}' "
                "and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return Calibration.from_run(runs[0]) if runs else None
