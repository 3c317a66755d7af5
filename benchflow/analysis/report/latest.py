"""The sweep ``benchflow report`` reports when given none: the newest one on disk.

A sweep's directory is ``RESULTS/<scenario>/_sweeps/<id>`` with its ``sweep.json``
manifest (:mod:`benchflow.sweeps.manifest`); sweeps are ordered by the manifest's
``started_at``, or by the directory's modification time without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchflow.sweeps.manifest import read_manifest


@dataclass(frozen=True)
class FoundSweep:
    path: Path
    started_at: float
    has_manifest: bool

    @property
    def ref(self) -> str:
        """What to report: the directory (its manifest names the sweep), else its id."""
        return str(self.path) if self.has_manifest else self.path.name


def sweeps_under(results_dir: str | Path) -> list[FoundSweep]:
    """Every sweep directory under ``results_dir``, oldest first."""
    found = []
    for d in Path(results_dir).glob("*/_sweeps/*"):
        if not d.is_dir():
            continue
        try:
            manifest = read_manifest(d)
        except (OSError, ValueError):
            manifest = None
        started = (manifest or {}).get("started_at")
        if not isinstance(started, int | float):
            try:
                started = d.stat().st_mtime
            except OSError:
                continue
        found.append(FoundSweep(d, float(started), manifest is not None))
    return sorted(found, key=lambda s: (s.started_at, s.path.name))


def latest_sweep(results_dir: str | Path) -> FoundSweep | None:
    """The newest sweep under ``results_dir`` (None: there is none)."""
    found = sweeps_under(results_dir)
    return found[-1] if found else None
