"""``benchflow sync``: upload the trials that are on disk but not (completely) in
MLflow — after an outage of the tracking server, or from a node that could not
reach it. Idempotent: the trial id is the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchflow.results import read_json
from benchflow.tracking.client import client
from benchflow.tracking.sweep_runs import Busy
from benchflow.tracking.upload import UPLOAD_MARKER, inspect_trial, upload_trial


# -- sync --------------------------------------------------------------------------
@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # being uploaded by another process
    incomplete: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def trial_dirs(results_dir: Path, scenario: str | None = None):
    """Every trial directory under ``results_dir`` (``<scenario>/<trial_id>/``)."""
    root = Path(results_dir)
    scenarios = [root / scenario] if scenario else sorted(p for p in root.iterdir() if p.is_dir())
    for sdir in scenarios:
        if not sdir.is_dir() or sdir.name.startswith("_"):
            continue
        for tdir in sorted(sdir.iterdir()):
            if tdir.is_dir() and not tdir.name.startswith("_"):
                yield tdir


def sync(
    results_dir: Path, uri: str | None = None, scenario: str | None = None, dry_run: bool = False
) -> SyncReport:
    """Upload every trial not yet in MLflow. Safe to run any number of times."""
    report = SyncReport()
    clients: dict[str | None, Any] = {}
    for tdir in trial_dirs(results_dir, scenario):
        name = f"{tdir.parent.name}/{tdir.name}"
        try:
            state = inspect_trial(tdir)
        except ValueError as exc:
            report.corrupt.append((name, str(exc)))
            continue
        if state.status == "running":
            report.running.append(name)
            continue
        target = uri or state.meta.get("tracking_uri")
        if state.uploaded and (
            uri is None or read_json(tdir / UPLOAD_MARKER).get("tracking_uri") == uri
        ):
            report.already.append(name)
            continue
        if state.status == "incomplete":
            report.incomplete.append(name)
        if dry_run:
            report.uploaded.append(name)
            continue
        try:
            if target not in clients:
                clients[target] = client(target)
            upload_trial(tdir, clients[target], uri=uri, wait=False)
            if state.status != "incomplete":
                report.uploaded.append(name)
        except Busy:
            report.busy.append(name)
        except Exception as exc:
            report.failed.append((name, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    return report
