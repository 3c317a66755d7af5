"""Retention (``benchflow gc --older-than 90d``): prune local results already in MLflow.

A trial directory (its files and logs) older than the cutoff is pruned only when
it is safely in MLflow: ``upload.json`` says the upload completed and — unless
``verify=False`` — the run is found in the tracking server it names, marked
complete (``benchflow.upload=complete``) and carrying the trial's id. A trial
that is running, incomplete and not uploaded, corrupt, or cannot be verified
(server unreachable) is kept, with the reason. A sweep's or a single run's
directory (``_sweeps/<id>``, ``_runs/<time>``: job logs, summaries) goes once
it is older than the cutoff and none of its trials is kept. Prometheus
textfiles older than the cutoff go too (they are derived from the trials).

Nothing is deleted unless asked: :func:`plan` says what would go, :func:`apply`
removes it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchflow.results import read_json
from benchflow.sweeps.log_bundle import parse_duration, sweep_trial_dirs


@dataclass
class Item:
    path: Path
    kind: str  # trial | sweep | run | textfile
    age_s: float
    why: str = ""  # kept: the reason ("<kind of reason>: <details>")


@dataclass
class Plan:
    cutoff_s: float
    delete: list[Item] = field(default_factory=list)
    keep: list[Item] = field(default_factory=list)


def _age(now: float, t: float | None, path: Path) -> float:
    if not t:
        try:
            t = path.stat().st_mtime
        except OSError:
            t = now
    return now - float(t)


class _Verifier:
    """Is the run of an uploaded trial really in MLflow? One client per tracking URI."""

    def __init__(self, uri_override: str | None) -> None:
        self.uri_override = uri_override
        self._clients: dict[str | None, object] = {}

    def check(self, trial_id: str, marker: dict) -> str | None:
        """None when verified, else why not."""
        from benchflow import tracking

        uri = self.uri_override or marker.get("tracking_uri")
        if uri and "***" in uri:
            return f"cannot verify, its tracking URI is masked: {uri} (use --tracking-uri)"
        try:
            if uri not in self._clients:
                self._clients[uri] = tracking.client(uri, http_timeout_s=10, http_retries=0)
            run = self._clients[uri].get_run(marker["run_id"])  # type: ignore[attr-defined]
        except Exception as exc:
            return f"cannot verify in MLflow: {uri}: {type(exc).__name__}: " + (
                str(exc).splitlines()[0][:200] if str(exc) else ""
            )
        tags = run.data.tags
        if run.info.lifecycle_stage == "deleted":  # the server's own gc may purge it any time
            return f"deleted in MLflow: run {marker['run_id']} in {uri}"
        if tags.get("benchflow.trial_id") != trial_id:
            return f"not this trial's run: run {marker['run_id']} in {uri}"
        if tags.get(tracking.TAG_COMPLETE) != "complete":
            return f"not completely uploaded: run {marker['run_id']} in {uri}"
        return None


def plan(
    results_dir: Path,
    older_than: str | float,
    verify: bool = True,
    tracking_uri: str | None = None,
    textfile_dir: Path | None = None,
    now: float | None = None,
) -> Plan:
    """What ``gc`` would prune under ``results_dir`` (and ``textfile_dir``)."""
    from benchflow import tracking

    now = time.time() if now is None else now
    cutoff = parse_duration(older_than) if isinstance(older_than, str) else float(older_than)
    out = Plan(cutoff)
    verifier = _Verifier(tracking_uri) if verify else None
    root = Path(results_dir)
    kept_trials: set[str] = set()
    for tdir in tracking.trial_dirs(root) if root.is_dir() else []:
        try:
            state = tracking.inspect_trial(tdir)
        except ValueError as exc:
            age = _age(now, None, tdir)
            if age >= cutoff:
                out.keep.append(Item(tdir, "trial", age, f"corrupt, not uploaded: {exc}"))
            kept_trials.add(tdir.name)
            continue
        meta = state.meta
        age = _age(now, meta.get("ended_at_epoch") or meta.get("started_at_epoch"), tdir)
        if age < cutoff:
            kept_trials.add(tdir.name)
            continue
        why = None
        if state.status == "running":
            why = "running"
        elif not state.uploaded:
            why = f"{state.status}, not uploaded (run `benchflow sync` first)"
        elif verifier is not None:
            why = verifier.check(state.trial_id, read_json(tdir / tracking.UPLOAD_MARKER))
        if why:
            out.keep.append(Item(tdir, "trial", age, why))
            kept_trials.add(tdir.name)
        else:
            out.delete.append(Item(tdir, "trial", age))
    for kind, pattern in (("sweep", "*/_sweeps/*"), ("run", "*/_runs/*")):
        for d in sorted(root.glob(pattern)) if root.is_dir() else []:
            if not d.is_dir():
                continue
            started = None
            if (d / "sweep.json").exists():
                try:
                    started = read_json(d / "sweep.json").get("started_at")
                except (OSError, ValueError):
                    started = None
            age = _age(now, started, d)
            if age < cutoff:
                continue
            held = [t.name for t in sweep_trial_dirs(d) if t.name in kept_trials]
            if held:
                out.keep.append(Item(d, kind, age, f"holds kept trials: {len(held)}"))
            else:
                out.delete.append(Item(d, kind, age))
    if textfile_dir is not None and Path(textfile_dir).is_dir():
        from benchflow.tracking.prometheus import PREFIX

        for f in sorted(Path(textfile_dir).glob(f"{PREFIX}*.prom")):
            age = _age(now, None, f)
            if age >= cutoff:
                out.delete.append(Item(f, "textfile", age))
    return out


def apply(p: Plan) -> list[Path]:
    """Delete what the plan says; returns what was removed."""
    gone = []
    for item in p.delete:
        if item.path.is_dir():
            shutil.rmtree(item.path)
        else:
            item.path.unlink(missing_ok=True)
        gone.append(item.path)
    return gone
