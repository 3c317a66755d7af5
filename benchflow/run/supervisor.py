"""A trial in a worker process, watched: hard limits and isolation.

The harness (this side) starts ``python -m benchflow.run.worker TRIAL_DIR`` — this
interpreter, an isolated venv's, or ``apptainer exec IMAGE python ...`` — and
hands it the resolved config on stdin (never on disk: it may hold secrets).
The worker runs the trial exactly as the harness would in process (SUT up,
load, result files) and writes ``.worker.json``; the harness then finishes
``meta.json`` and uploads to MLflow, so a worker that was killed still leaves a
recorded trial behind.

The watchdog samples the worker's process tree every ``limits.poll_s``:

- over the **time** limit: SIGTERM to the worker (its drivers tear down), then
  after ``limits.grace_s`` SIGKILL to every process of the tree still alive;
- over the **memory** limit (the summed RSS of the tree): SIGKILL at once.

Either way the trial fails with error class ``limit_exceeded`` and the limit,
the figure observed and when are recorded (``meta.json`` ``limit``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import psutil

from benchflow import results
from benchflow.config.limits import Enforced, LimitExceeded
from benchflow.run import isolation
from benchflow.run.failures import UnexpectedFailure
from drivers.base import DriverError

log = logging.getLogger("benchflow.supervisor")

WORKER_OUT = ".worker.json"  # hidden: not uploaded as an artifact
MB = 1024**2


def run(spec, trial_dir: Path, meta: dict, limits: Enforced):
    """Run the trial in a worker process under ``limits``; returns its TrialResult."""
    argv, env = _command(spec, trial_dir, meta, limits)
    results.write_json(trial_dir / "meta.json", meta)  # isolation details, before the run
    payload = {
        "resolved": spec.resolved,
        "overrides": list(spec.overrides),
        "trial_id": meta["trial_id"],
        "repetition": meta["repetition"],
        "config_hash": meta["config_hash"],
        "started_at": meta["started_at"],
        "target": meta.get("target"),
        "limits": {"cpus": limits.cpus, "address_space_bytes": limits.address_space_bytes},
    }
    out_path = trial_dir / WORKER_OUT
    out_path.unlink(missing_ok=True)
    log.info("trial runs in a worker: %s", " ".join(argv[:4]) + (" ..." if len(argv) > 4 else ""))
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env, start_new_session=True)
    except FileNotFoundError as exc:
        raise DriverError(
            f"cannot start the trial's worker: {exc}", "isolation_unavailable"
        ) from None
    watch = _Watch(proc, limits)
    try:
        with contextlib.suppress(BrokenPipeError):  # a worker that died at once: seen below
            proc.stdin.write(json.dumps(payload, default=str).encode())
            proc.stdin.close()
        verdict = watch.run()
    except BaseException:
        watch.end(graceful=True)  # Ctrl-C in the harness: never leave the trial running
        raise
    elapsed = time.monotonic() - t0
    meta["supervision"] = {
        "worker_pid": proc.pid,
        "exit_code": proc.returncode,
        "elapsed_s": round(elapsed, 3),
        "peak_rss_mb": round(watch.peak_rss / MB, 1),
        "limits": limits.describe(),
    }
    done = results.read_json(out_path) if out_path.exists() else None
    if done:
        meta["timings_s"].update(done.get("timings_s", {}))
        for k in ("window_start_epoch", "worker"):
            if done.get(k) is not None:
                meta[k] = done[k]
        if done.get("shards"):  # clients > 1: each shard's host, clock and figures
            meta.setdefault("lineage", {})["shards"] = done["shards"]
        if done.get("driver_version"):
            meta["driver_version_in_worker"] = done["driver_version"]
    if verdict is not None:
        raise verdict
    if done is None:
        raise UnexpectedFailure(
            "WorkerDied",
            f"the trial's worker process ended ({_exit_text(proc.returncode)}) without a result"
            " — killed from outside (the kernel's OOM killer, a signal)?",
            "",
        )
    if done["status"] == "finished":
        return results.load_result(trial_dir)
    err = done["error"]
    tb = (trial_dir / "logs" / "traceback.txt").read_text() if err.get("traceback") else ""
    if err["kind"] == "handled":
        exc = DriverError(err["message"], err["class"])
        exc.traceback_text = tb  # type: ignore[attr-defined]
        if err.get("limit"):
            exc = LimitExceeded(err["message"], err["limit"])
            exc.traceback_text = tb  # type: ignore[attr-defined]
        raise exc
    raise UnexpectedFailure(err["class"], err["message"], tb)


def _command(spec, trial_dir: Path, meta: dict, limits: Enforced) -> tuple[list[str], dict]:
    iso = spec.service.isolation
    inner = ["-m", "benchflow.run.worker", str(trial_dir.resolve())]
    extra_env = {}
    if limits.gpus is not None:
        extra_env["CUDA_VISIBLE_DEVICES"] = _visible_gpus(limits.gpus)
    if iso.mode == "venv":
        envs_dir, logs_dir = Path(spec.cfg.envs_dir), trial_dir / "logs"
        info = isolation.ensure_venv(envs_dir, _dist_of(spec), iso, logs_dir)
        meta["isolation"] = {"mode": "venv", **isolation.describe(info)}
        return [info.python, *inner], isolation.clean_env(extra_env)
    if iso.mode == "container":
        data_dir = Path(spec.cfg.data_dir).expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        binds = [str(trial_dir.resolve()), str(data_dir)]
        gpus = spec.service.resources.gpus > 0 and limits.gpus != 0
        argv = isolation.container_argv(iso, ["python", *inner], binds, gpus, os.getcwd())
        env = dict(os.environ)
        inside = dict(extra_env)
        if digest := isolation.image_digest(iso.image or ""):
            inside["BENCHFLOW_CONTAINER_DIGEST"] = digest
        env.update(isolation.container_env(inside))
        meta["isolation"] = {"mode": "container", "image": iso.image, "argv": argv}
        if _which(iso.runtime) is None:
            raise DriverError(
                f"{iso.runtime} is not on PATH: cannot run the trial in {iso.image} "
                f"(would run: {' '.join(argv)})",
                "isolation_unavailable",
            )
        return argv, env
    return [sys.executable, *inner], {**os.environ, **extra_env}


def _which(cmd: str) -> str | None:
    import shutil

    return shutil.which(cmd)


def _dist_of(spec) -> metadata.Distribution | None:
    from drivers import discovery

    return discovery.distribution(spec.service.driver)


def _visible_gpus(n: int) -> str:
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i for i in current.split(",") if i] if current is not None else None
    if ids is None:
        from benchflow.config.limits import _gpu_count

        ids = [str(i) for i in range(_gpu_count())]
    return ",".join(ids[:n])


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


class _Watch:
    """Samples the worker's process tree; ends it over a limit."""

    def __init__(self, proc: subprocess.Popen, limits: Enforced) -> None:
        self.proc, self.limits = proc, limits
        self.peak_rss = 0
        self.t0 = time.monotonic()
        self.seen: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            self.seen[proc.pid] = psutil.Process(proc.pid)

    def tree(self) -> list[psutil.Process]:
        """The worker and its descendants now (also remembered, to kill orphans later)."""
        root = self.seen.get(self.proc.pid)
        if root is None:
            return []
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def rss(self, procs: list[psutil.Process]) -> int:
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def run(self) -> LimitExceeded | None:
        lim = self.limits
        while True:
            try:
                self.proc.wait(timeout=lim.poll_s)
                return None
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - self.t0
            procs = self.tree()
            rss = self.rss(procs)
            self.peak_rss = max(self.peak_rss, rss)
            if lim.mem_bytes is not None and rss > lim.mem_bytes:
                self.end(graceful=False)
                return LimitExceeded(
                    f"memory limit exceeded: the trial's {len(procs)} process(es) held "
                    f"{rss / MB:.0f} MB resident, above {lim.mem_key} = "
                    f"{lim.mem_bytes / 1024**3:g} GB ({lim.mem_bytes / MB:.0f} MB); "
                    f"ended after {elapsed:.1f} s",
                    {
                        "resource": "memory",
                        "key": lim.mem_key,
                        "limit_mb": round(lim.mem_bytes / MB, 1),
                        "observed_mb": round(rss / MB, 1),
                        "elapsed_s": round(elapsed, 3),
                    },
                )
            if lim.time_s is not None and elapsed > lim.time_s:
                log.warning("%s = %.1f s reached: ending the trial", lim.time_key, lim.time_s)
                self.end(graceful=True)
                return LimitExceeded(
                    f"time limit exceeded: the trial ran {elapsed:.1f} s, above "
                    f"{lim.time_key} = {lim.time_s:.1f} s",
                    {
                        "resource": "time",
                        "key": lim.time_key,
                        "limit_s": round(lim.time_s, 3),
                        "observed_s": round(elapsed, 3),
                    },
                )

    def end(self, graceful: bool) -> None:
        """SIGTERM the worker and wait ``grace_s`` (graceful), then SIGKILL the whole tree."""
        self.tree()
        if graceful and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.limits.grace_s
            while self.proc.poll() is None and time.monotonic() < deadline:
                self.tree()  # keep track of descendants while it tears down
                time.sleep(min(0.05, self.limits.poll_s))
        if self.proc.poll() is None:
            self.tree()
        for p in self.seen.values():  # worker first: it must not start new processes
            with contextlib.suppress(psutil.Error):
                p.kill()  # psutil checks the create time: a reused pid is never hit
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
