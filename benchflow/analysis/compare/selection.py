"""The runs one side of a comparison stands for, read from MLflow: a target
(NAME@ALIAS, NAME/VERSION), run ids, a sweep or an experiment resolved into its
valid, finished trial runs (:func:`select`, :class:`Selection`), each run with
what a comparison needs of it, its latency histograms included
(:class:`RunRecord`); :class:`CompareError` when there is nothing to compare.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchflow.load.histogram import LogHistogram

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareError(Exception):
    """Nothing to compare (no runs, no matching configuration); ``str()`` says why."""


# -- runs from MLflow ------------------------------------------------------------
@dataclass
class RunRecord:
    """What comparison needs of one trial run."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str = ""
    _hists: dict[str, LogHistogram] | None = field(default=None, repr=False)
    started_at: float | None = None  # epoch seconds (tag benchflow.started_at, or the run's)
    ended_at: float | None = None

    @property
    def repetition(self) -> int | None:
        rep = self.tags.get("benchflow.repetition")
        return int(rep) if rep is not None and rep.isdigit() else None

    @property
    def target_keys(self) -> list[str]:
        keys = self.tags.get("benchflow.target_keys", "")
        return [k for k in keys.split(",") if k]

    def histograms(self, results_dir: Path | None = None) -> dict[str, LogHistogram]:
        """The run's latency histograms: from the trial's files if they are here, else
        from its artifacts; empty when it has none."""
        if self._hists is None:
            self._hists = {}
            data = _read_histograms(self, results_dir)
            if data:
                self._hists = {k: LogHistogram.from_dict(v) for k, v in data.items()}
        return self._hists


def _read_histograms(run: RunRecord, results_dir: Path | None) -> dict | None:
    candidates = []
    uri = run.artifact_uri.removeprefix("file://")
    if uri.startswith("/"):
        candidates.append(Path(uri) / "histograms.json")
    scen, tid = run.tags.get("benchflow.scenario"), run.tags.get("benchflow.trial_id")
    if scen and tid:
        candidates.append(Path(results_dir or "results") / scen / tid / "histograms.json")
    for p in candidates:
        if p.is_file():
            return json.loads(p.read_text())
    try:
        import mlflow.artifacts

        path = mlflow.artifacts.download_artifacts(
            run_id=run.run_id, artifact_path="histograms.json"
        )
        return json.loads(Path(path).read_text())
    except Exception:
        return None


def _record(r) -> RunRecord:
    tags = dict(r.data.tags)
    try:  # the trial's own clock (meta.json), else the run's start
        started = float(tags["benchflow.started_at"])
    except (KeyError, ValueError):
        started = r.info.start_time / 1000 if r.info.start_time else None
    ended = r.info.end_time / 1000 if r.info.end_time else None
    return RunRecord(
        r.info.run_id,
        dict(r.data.params),
        dict(r.data.metrics),
        tags,
        r.info.artifact_uri,
        started_at=started,
        ended_at=ended if ended is None or started is None or ended >= started else started,
    )


@dataclass
class Selection:
    """The runs one side of a comparison stands for."""

    spec: str
    kind: str  # target | runs | sweep | experiment
    label: str
    runs: list[RunRecord]
    left_out: dict[str, int] = field(default_factory=dict)  # why -> count
    target: Any = None  # registry.ResolvedTarget for a target


def select(spec: str, client, experiment: str | None = None) -> Selection:
    """Resolve NAME@ALIAS, NAME/VERSION, run ids (comma-separated), a sweep id or an
    experiment name (prefix ``target:``, ``run:``, ``sweep:`` or ``experiment:`` to
    say which) into its valid, finished trial runs."""
    from benchflow import registry

    kind, _, value = (
        spec.partition(":")
        if re.match(r"^(target|run|sweep|experiment):", spec)
        else ("", "", spec)
    )
    exp_ids = None
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise CompareError(f"--experiment {experiment!r}: no such experiment")
        exp_ids = [exp.experiment_id]
    all_exps = exp_ids or [e.experiment_id for e in client.search_experiments()]

    def search(flt: str) -> list:
        out, token = [], None
        while all_exps:
            page = client.search_runs(
                all_exps, filter_string=flt, max_results=5000, page_token=token
            )
            out += list(page)
            token = page.token
            if not token:
                break
        return out

    if kind == "target" or (not kind and ("@" in value or re.match(r"^[^/\s]+/\d+$", value))):
        try:
            t = registry.resolve(value, client=client)
        except registry.TargetError as exc:
            raise CompareError(str(exc)) from None
        runs = search(f"tags.`benchflow.target` = '{t.label}'")
        return _finish(
            Selection(
                spec,
                "target",
                t.label if t.ref == t.label else f"{t.ref} ({t.label})",
                [],
                target=t,
            ),
            runs,
        )
    if kind == "run" or (not kind and all(_RUN_ID.match(x) for x in value.split(","))):
        runs = []
        for rid in value.split(","):
            try:
                r = client.get_run(rid)
            except Exception:
                raise CompareError(f"run {rid}: no such run") from None
            if r.data.tags.get("benchflow.role") == "sweep":
                runs += search(f"tags.`mlflow.parentRunId` = '{rid}'")
            else:
                runs.append(r)
        return _finish(Selection(spec, "runs", f"{len(value.split(','))} run(s)", []), runs)
    if kind == "experiment" or (not kind and client.get_experiment_by_name(value) is not None):
        exp = client.get_experiment_by_name(value)
        if exp is None:
            raise CompareError(f"experiment {value!r}: no such experiment")
        runs = []
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=5000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        return _finish(Selection(spec, "experiment", f"experiment {value}", []), runs)
    if kind == "sweep" or not kind:
        sweep_id = Path(value).name if kind or "/" in value else value
        runs = search(f"tags.`benchflow.sweep_id` = '{sweep_id}'")
        if runs or kind:
            return _finish(Selection(spec, "sweep", f"sweep {sweep_id}", []), runs)
    raise CompareError(
        f"{spec!r} is not a target (NAME@ALIAS, NAME/VERSION), a run id, a sweep id "
        "or an experiment name that has runs here"
    )


def _finish(sel: Selection, runs: Iterable) -> Selection:
    for r in runs:
        tags = r.data.tags
        if tags.get("benchflow.role") == "sweep":
            continue
        if "benchflow.trial_id" not in tags:
            why = "not a benchflow trial"
        elif r.info.status != "FINISHED":
            why = f"status {r.info.status}"
        elif tags.get("benchflow.valid") != "true":
            why = "invalid (see benchflow.invalid_reasons)"
        else:
            sel.runs.append(_record(r))
            continue
        sel.left_out[why] = sel.left_out.get(why, 0) + 1
    if not sel.runs:
        extra = (
            "; left out: " + ", ".join(f"{n} {w}" for w, n in sel.left_out.items())
            if sel.left_out
            else ""
        )
        raise CompareError(f"{sel.spec}: no valid finished trial runs{extra}")
    return sel
