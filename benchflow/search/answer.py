"""The search's parent run: opened before the first probe, given the answer at the end.

The parent is a sweep's parent run (:func:`benchflow.tracking.start_sweep`, tag
``benchflow.sweep_id`` = the search's id, so ``benchflow report ID`` finds it
and its probes) with ``benchflow.search`` = ``capacity`` | ``saturation``. At
the end it gets:

- metrics ``capacity.max_rate`` (or ``capacity.max_concurrency``),
  ``capacity.ci_low``, ``capacity.ci_high`` (absent when nothing failed: a lower
  bound), ``capacity.lower_bound`` (1: the SUT may take more), ``capacity.throughput``;
  a saturation sweep ``saturation.max_throughput`` and ``saturation.sync_throughput``
  (and ``capacity.*`` when it had SLOs); ``search.trials``, ``search.trials_new``,
  ``search.trials_reused``, ``search.trial_seconds`` (warm-up + measured seconds of
  every probe), ``search.wall_seconds``;
- tags ``benchflow.search.slo``, ``benchflow.search.binding_slo`` (the SLO that
  bound the answer), ``benchflow.search.over``, ``benchflow.search.bound``
  (exact | lower | upper | none), ``benchflow.search.note``;
- artifacts ``search/curve.csv``, ``search/curve.json``, ``search/curve.png``, and
  the sweep's ``summary.csv`` / ``summary.md``.

The same files are written to the search's directory first, as a trial's are.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from benchflow import tracking
from benchflow.config import TrialSpec
from benchflow.results import write_json
from benchflow.search import curve as curves
from benchflow.secrets import mask, mask_override
from benchflow.sweeps.manifest import MANIFEST

log = logging.getLogger("benchflow.search")


class Parent:
    """The parent run of one search (or none, when tracking is off or unreachable)."""

    def __init__(
        self,
        spec: TrialSpec,
        search_id: str,
        search_dir: Path,
        overrides: list[str],
        outer_parent: str | None = None,
    ) -> None:
        self.spec, self.search_id, self.search_dir = spec, search_id, search_dir
        self.started_at = time.time()
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        c, s = spec.cfg, spec.cfg.search
        shown = [mask_override(o) for o in overrides]
        if c.tracking.upload:
            try:
                cl = self._client()
                self.tracking_uri = mask(tracking.resolved_uri(c.tracking.uri), set())
                self.run_id = tracking.start_sweep(
                    cl, c.tracking.experiment, search_id, c.scenario, shown
                )
                tags = {
                    "benchflow.search": s.kind,
                    "benchflow.search.over": s.over if s.kind == "capacity" else "rate",
                    "benchflow.search.slo": "; ".join(s.slo),
                    "benchflow.service": spec.service.name,
                }
                if outer_parent:
                    tags["mlflow.parentRunId"] = outer_parent
                for k, v in tags.items():
                    cl.set_tag(self.run_id, k, v)
                cl.log_param(self.run_id, "search", json.dumps(s.model_dump()))
            except Exception as exc:
                log.warning(
                    "MLflow unreachable at the search's start (%s); the probes keep their "
                    "files for `benchflow sync`",
                    str(exc).splitlines()[0] if str(exc) else exc,
                )
                self.run_id = None
        search_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            search_dir / MANIFEST,
            {
                "sweep_id": search_id,
                "search": s.kind,
                "scenario": c.scenario,
                "experiment": c.tracking.experiment,
                "overrides": shown,
                "started_at": self.started_at,
                "tracking_uri": self.tracking_uri,
                "parent_run_id": self.run_id,
            },
        )

    def _client(self):
        t = self.spec.cfg.tracking
        return tracking.client(t.uri, t.http_timeout_s, t.http_retries)

    def finish(self, curve: dict[str, Any], failed: bool) -> list[Path]:
        """Write the curve's files, then log the answer to the parent run."""
        from benchflow.sweeps.callback import collect, write_summary

        d = self.search_dir
        write_json(d / curves.CURVE_JSON, curve)
        curves.write_csv(curve, d / curves.CURVE_CSV)
        files = [d / curves.CURVE_JSON, d / curves.CURVE_CSV]
        try:
            (d / curves.CURVE_PNG).write_bytes(curves.figure_png(curve))
            files.append(d / curves.CURVE_PNG)
        except Exception as exc:  # a figure never costs the answer
            log.warning("could not draw the curve: %s", exc)
        rows = collect(d)
        summary = write_summary(d, rows)
        counts = {
            "total": len(rows),
            "finished": sum(r["status"] == "finished" for r in rows),
            "failed": sum(r["status"] != "finished" for r in rows),
            "invalid": sum(r["status"] == "finished" and r["valid"] is False for r in rows),
        }
        if self.run_id is None:
            return files
        try:
            self._log(curve, files, summary, failed, counts)
        except Exception as exc:
            log.warning("could not log the answer to the parent run: %s", exc)
        return files

    def _log(
        self,
        curve: dict[str, Any],
        files: list[Path],
        summary: list[Path],
        failed: bool,
        counts: dict[str, int],
    ) -> None:
        from mlflow.entities import Metric, RunTag

        cl = self._client()
        now = int(time.time() * 1000)
        values = {**answer_metrics(curve), **{f"trials.{k}": v for k, v in counts.items()}}
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items()]
        ans = curve.get("answer") or {}
        tags = {
            "benchflow.search.bound": str(ans.get("bound", "none")),
            "benchflow.search.note": str(ans.get("note", ""))[:5000],
        }
        if curve.get("binding_slo"):
            tags["benchflow.search.binding_slo"] = curve["binding_slo"]
        cl.log_batch(self.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        for f in files:
            cl.log_artifact(self.run_id, str(f), curves.ARTIFACT_DIR)
        for f in summary:
            cl.log_artifact(self.run_id, str(f))
        cl.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def answer_metrics(curve: dict[str, Any]) -> dict[str, float]:
    """The parent's metrics (see the module's docstring)."""
    out: dict[str, float] = {}
    ans = curve.get("answer") or {}
    if ans.get("value") is not None:
        key = "max_rate" if curve.get("over") == "rate" else "max_concurrency"
        out[f"capacity.{key}"] = ans["value"]
        out["capacity.lower_bound"] = 1.0 if ans.get("bound") == "lower" else 0.0
        if ans.get("throughput") is not None:
            out["capacity.throughput"] = ans["throughput"]
    for k in ("ci_low", "ci_high"):
        if ans.get(k) is not None:
            out[f"capacity.{k}"] = ans[k]
    if curve.get("kind") == "saturation":
        for k in ("max_throughput", "sync_throughput"):
            if curve.get(k) is not None:
                out[f"saturation.{k}"] = curve[k]
    for k, v in (curve.get("cost") or {}).items():
        out[f"search.{k}"] = v
    return out
