"""``python -m benchflow.run.worker TRIAL_DIR``: one trial's measurement, in its own process.

Started by :mod:`benchflow.run.supervisor` (when limits or isolation apply), in
this environment, an isolated venv or a container. It reads its instructions
(the resolved config) from stdin, applies the limits a process sets on itself
(CPU affinity, ``RLIMIT_AS``), validates the config again *in its own
environment* (the driver's version there is the one that runs), runs the
trial's measurement (:func:`benchflow.run.trial.measure`) and writes
``.worker.json``: finished, or failed with a handled code or an unexpected
exception (whose traceback goes to ``logs/traceback.txt``).

On SIGTERM (the harness's time limit) it unwinds — drivers tear down — and
exits; it also receives SIGTERM if the harness dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import sys
from pathlib import Path

WORKER_OUT = ".worker.json"
_PR_SET_PDEATHSIG = 1


class Terminated(BaseException):
    """SIGTERM: unwind through the driver's teardown (not an ``Exception``)."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
    raise Terminated("terminated by the harness (time limit)")


def _die_with_parent() -> None:
    # Not Linux/glibc: the harness kills us itself.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def apply_limits(limits: dict) -> dict:
    """Limits a process sets on itself (inherited by everything it starts)."""
    applied = {}
    cpus = limits.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[:cpus])
        applied["cpus"] = sorted(os.sched_getaffinity(0))
    nbytes = limits.get("address_space_bytes")
    if nbytes:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
        applied["address_space_bytes"] = nbytes
    return applied


def _console_logging() -> None:
    # The harness's console shows the worker's records too (as Hydra's does for its own).
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    h.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(h)
    root.setLevel(logging.INFO)


def main(argv: list[str]) -> int:
    trial_dir = Path(argv[0])
    payload = json.loads(sys.stdin.read())
    _die_with_parent()
    signal.signal(signal.SIGTERM, _on_sigterm)
    _console_logging()
    out: dict = {"status": "failed", "timings_s": {}, "worker": {"pid": os.getpid()}}
    meta = {
        "trial_id": payload["trial_id"],
        "repetition": payload["repetition"],
        "config_hash": payload["config_hash"],
        "started_at": payload["started_at"],
        "target": payload.get("target"),
        "timings_s": out["timings_s"],
    }
    limits = payload.get("limits") or {}
    logs_dir = trial_dir / "logs"
    try:
        out["worker"]["applied_limits"] = apply_limits(limits)
        out["worker"]["python"] = sys.executable
        from benchflow.config import ConfigError, validate
        from benchflow.results.logs import trial_logging
        from benchflow.run.trial import measure
        from drivers import discovery
        from drivers.base import DriverError

        with trial_logging(logs_dir, payload["trial_id"], payload["resolved"]):
            try:
                spec = validate(payload["resolved"], tuple(payload["overrides"]))
            except ConfigError as exc:
                raise DriverError(f"in the worker's environment: {exc}", "invalid_config") from None
            if spec.cfg.placement.active:
                from benchflow.sut import placement

                out["worker"]["placement"] = placement.apply(spec.cfg.placement)
                logging.getLogger("benchflow.placement").info(
                    "placement: %s", out["worker"]["placement"]
                )
            out["driver_version"] = discovery.info(spec.service.driver).version
            iso = spec.service.isolation
            if iso.mode != "none" and iso.requirements:
                from benchflow.run.isolation import installed_versions

                out["worker"]["versions"] = installed_versions(iso.requirements)
            measure(spec, trial_dir, meta)
        out["status"] = "finished"
        out["window_start_epoch"] = meta.get("window_start_epoch")
        out["shards"] = meta.get("lineage", {}).get("shards")
    except BaseException as exc:
        from benchflow.config.limits import LIMIT_EXCEEDED
        from benchflow.run.failures import describe

        failure = describe(exc)
        error = {"kind": failure.kind, "class": failure.error_class, "message": failure.message}
        if isinstance(exc, MemoryError) and limits.get("address_space_bytes"):
            # Refused by RLIMIT_AS: a limit, not a bug.
            gb = limits["address_space_bytes"] / 1024**3
            error = {
                "kind": "handled",
                "class": LIMIT_EXCEEDED,
                "message": f"memory limit exceeded: an allocation went over "
                f"limits.trial.address_space_gb = {gb:g} GB (RLIMIT_AS)",
                "limit": {"resource": "address_space", "key": "limits.trial.address_space_gb"},
            }
        if failure.traceback:
            logs_dir.mkdir(parents=True, exist_ok=True)
            (logs_dir / "traceback.txt").write_text(failure.traceback)
            error["traceback"] = True
        out["error"] = error
    _write(trial_dir / WORKER_OUT, out)
    return 0 if out["status"] == "finished" else 1


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
