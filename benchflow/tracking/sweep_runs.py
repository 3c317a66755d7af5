"""A sweep's parent run in MLflow: created once before any trial starts (or by
the first trial that finds none, under a file lock), finished with the sweep's
summary; every trial's run links to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from benchflow.results import lineage
from benchflow.tracking.client import ensure_experiment, find_run

log = logging.getLogger("benchflow.tracking")

SWEEP_LOCK = ".tracking.lock"


SWEEP_PARENT = "parent_run.json"  # a parent run created after the sweep started


# -- sweeps ------------------------------------------------------------------------
def start_sweep(c, experiment: str, sweep_id: str, scenario: str, overrides: list[str]) -> str:
    """Create (or find) the parent run of a sweep; returns its run id."""
    exp_id = ensure_experiment(c, experiment)
    existing = find_run(c, exp_id, "benchflow.sweep_id", sweep_id)
    if existing is not None:
        return existing.info.run_id
    tags = {
        "benchflow.sweep_id": sweep_id,
        "benchflow.role": "sweep",
        "benchflow.scenario": scenario,
        "benchflow.overrides": " ".join(overrides)[:5000],
        **lineage.tags(),
    }
    run = c.create_run(exp_id, tags=tags, run_name=f"sweep {sweep_id}")
    return run.info.run_id


def finish_sweep(c, run_id: str, summary_files: list[Path], counts: dict[str, int]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    c.log_batch(
        run_id, metrics=[Metric(f"trials.{k}", float(v), now, 0) for k, v in counts.items()]
    )
    for f in summary_files:
        c.log_artifact(run_id, str(f))
    c.set_terminated(run_id, "FAILED" if counts.get("failed") else "FINISHED")


class Busy(RuntimeError):
    """Another process holds the lock (it is uploading this trial right now)."""


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True, timeout_s: float = 300.0) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed); released when the process
    dies, so a killed uploader never leaves it stuck. Raises :class:`Busy` when
    ``wait`` is false and someone else holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only copy of the results: nobody else writes there
        log.debug("no lock at %s (%s)", path, exc)
        yield
        return
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise Busy(str(path)) from None
                if time.monotonic() > deadline:
                    raise Busy(f"{path}: still locked after {timeout_s:.0f} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def parent_for(c, exp_id: str, meta: dict) -> str | None:
    sweep = meta.get("sweep")
    if not sweep:
        return None
    if sweep.get("parent_run_id") and sweep.get("tracking_uri") == meta.get("tracking_uri"):
        return sweep["parent_run_id"]
    sweep_dir = Path(sweep.get("sweep_dir") or "")
    if sweep.get("sweep_dir") and sweep_dir.is_dir():
        # Many trials may get here at once (MLflow was down when the sweep started):
        # one creates the parent run, the others find it.
        with file_lock(sweep_dir / SWEEP_LOCK):
            return _find_or_create_parent(c, exp_id, meta, sweep)
    return _find_or_create_parent(c, exp_id, meta, sweep)


def _find_or_create_parent(c, exp_id: str, meta: dict, sweep: dict) -> str:
    found = find_run(c, exp_id, "benchflow.sweep_id", sweep["sweep_id"])
    if found is not None:
        return found.info.run_id
    run = c.create_run(
        exp_id,
        tags={
            "benchflow.sweep_id": sweep["sweep_id"],
            "benchflow.role": "sweep",
            "benchflow.scenario": meta["scenario"],
            "benchflow.created_by": "sync",
        },
        run_name=f"sweep {sweep['sweep_id']}",
    )
    c.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
