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
from benchflow.secrets import mask, mask_override
from benchflow.tracking.client import ensure_experiment, find_run

log = logging.getLogger("benchflow.tracking")

SWEEP_LOCK = ".tracking.lock"


SWEEP_PARENT = "parent_run.json"  # a parent run created after the sweep started

NOTE_TAG = "mlflow.note.content"  # a run's "Description" in the MLflow UI (Markdown)
NOTE_MAX = 8000  # MLflow's limit on a tag's value (longer ones are cut or refused)


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


def finish_sweep(
    c,
    run_id: str,
    summary_files: list[Path],
    counts: dict[str, int],
    rows: list[dict] | None = None,
) -> str:
    """Log the sweep's counts and summary files to its parent run, with the summary table
    (``rows``, as the sweep callback collects them) as the run's description; end the run.
    Returns the experiment id."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    now = int(time.time() * 1000)
    c.log_batch(
        run_id, metrics=[Metric(f"trials.{k}", float(v), now, 0) for k, v in counts.items()]
    )
    for f in summary_files:
        c.log_artifact(run_id, str(f))
    if rows is not None:
        try:
            c.set_tag(run_id, NOTE_TAG, sweep_description(rows, counts))
        except MlflowException as exc:  # a description is a convenience; the files are there
            log.warning("could not set the sweep run's description: %s", exc)
    c.set_terminated(run_id, "FAILED" if counts.get("failed") else "FINISHED")
    return c.get_run(run_id).info.experiment_id


# -- the sweep's description: its summary table in the MLflow UI --------------------
def sweep_description(rows: list[dict], counts: dict[str, int]) -> str:
    """The sweep's summary as Markdown: one line of counts, one table row per trial with
    its headline figures (named as the trials' metrics are, to find them as columns) and
    the overrides that vary between trials. Rows that do not fit MLflow's limit are
    counted, not cut in half (summary.md has them all). Overrides are masked."""
    split = [[mask_override(o) for o in (r.get("overrides") or "").split()] for r in rows]
    known = [set(s) for s in split if s]  # an unreadable trial's overrides are unknown
    common = set.intersection(*known) if known else set()
    units = {r.get("unit") for r in rows if r.get("unit")}
    unit = units.pop() if len(units) == 1 else None
    head = (
        f"**{counts.get('finished', 0)} finished, {counts.get('failed', 0)} failed, "
        f"{counts.get('invalid', 0)} invalid** of {counts.get('total', len(rows))} trials"
        + (f", {counts['retried']} attempt(s) retried" if counts.get("retried") else "")
    )
    lines = [head, ""]
    if common:
        shared = [o for o in next(s for s in split if s) if o in common]  # as given
        lines += [mask("All trials: " + " ".join(f"`{o}`" for o in shared), set()), ""]
    cols = ["job", "trial", "varies", "status", "valid", "throughput", "p50 ms", "p99 ms"]
    cols += ["errors"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    tail = [
        "",
        (f"throughput in {unit}; " if unit else "")
        + "the trials' metrics `throughput`, `latency_ms.p50`, `latency_ms.p99`, "
        "`errors.rate`. The trials are this run's children: expand it in the "
        "experiment's runs table. All figures: `summary.csv`, `summary.md` (artifacts).",
    ]
    budget = NOTE_MAX - len("\n".join(lines + tail)) - 100
    shown = 0
    for r, over in zip(rows, split, strict=True):
        line = mask(_row(r, " ".join(o for o in over if o not in common), unit), set())
        if len(line) + 1 > budget:
            break
        lines.append(line)
        budget -= len(line) + 1
        shown += 1
    if shown < len(rows):
        lines += ["", f"... and {len(rows) - shown} more trials: see `summary.md`."]
    return "\n".join(lines + tail)


def _row(r: dict, varies: str, unit: str | None) -> str:
    status = r.get("status") or ""
    if status != "finished":
        status = f"**{status}**" + (f" ({r['error']})" if r.get("error") else "")
    valid = {True: "yes", False: "**no**"}.get(r.get("valid"), "")
    throughput = _num(r.get("throughput"))
    if throughput and not unit and r.get("unit"):
        throughput += f" {r['unit']}"
    cells = [r.get("job"), r.get("trial"), varies, status, valid, throughput]
    cells += [_num(r.get("p50_ms")), _num(r.get("p99_ms")), _num(r.get("error_rate"))]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _cell(v) -> str:
    """Text safe in a Markdown table cell."""
    return "" if v is None else str(v).replace("\n", " ").replace("|", "\\|")


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
