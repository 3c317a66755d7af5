"""What a sweep directory holds, by name: ``sweep.json`` (the manifest every trial
reads to find the sweep's parent run), and in each job's output directory
``trials.txt`` / ``retried.txt`` (the trial directories it produced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchflow.results import read_json

MANIFEST = "sweep.json"
TRIALS_FILE = "trials.txt"  # in each job's output dir: one trial directory per line
RETRIED_FILE = "retried.txt"  # attempts superseded by a retry (same format, not in the summary)


def sweep_id_of(sweep_dir: str | Path) -> str:
    return Path(sweep_dir).name


def read_manifest(sweep_dir: str | Path) -> dict[str, Any] | None:
    path = Path(sweep_dir) / MANIFEST
    return read_json(path) if path.exists() else None
