"""The life of one trial (DESIGN.md): SUT up, load, result on disk, then MLflow.

1. the trial directory and ``meta.json`` (status ``running``) are written first;
2. the driver sets up the SUT and data (phases timed), the monitor starts;
3. warm-up runs and is discarded; the measured phase runs (closed or open loop);
4. quality is measured, the result computed, judged and written to disk;
5. teardown runs whatever happened; ``meta.json`` gets the final status;
6. the trial directory is uploaded to MLflow; if that fails the files stay and
   ``benchflow sync`` uploads them later.

Steps 2–4 run in this process, or — when hard limits apply or the driver asks
for isolation — in a watched worker process (:mod:`benchflow.run.supervisor`).
A failure is *handled* (a ``DriverError`` code and its message) or
*unexpected* (its traceback is shown and kept): :mod:`benchflow.run.failures`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import psutil

from benchflow import results, tracking
from benchflow.config import TrialSpec, needs_declared
from benchflow.config.compose import REPETITION_KEY
from benchflow.config.limits import LimitExceeded, enforced, host_shortfalls
from benchflow.load.engine import Engine, Phase
from benchflow.load.schedule import Stage
from benchflow.results import lineage
from benchflow.results.identity import config_hash
from benchflow.results.logs import trial_logging
from benchflow.results.monitor import Monitor
from benchflow.run.failures import describe
from benchflow.secrets import mask, mask_override, redact_tree
from drivers.base import DriverError, TrialContext, state_dir_for

log = logging.getLogger("benchflow.trial")


@dataclass(frozen=True)
class SweepInfo:
    """Which sweep a trial belongs to (read from the sweep's manifest)."""

    sweep_id: str
    sweep_dir: str
    parent_run_id: str | None
    tracking_uri: str | None
    job_num: int
    started_at: float | None = None  # epoch seconds: the sweep's time budget counts from it
    position: int | None = None  # the trial's place in the sweep's planned order (0-based)


@dataclass
class TrialOutcome:
    trial_id: str
    trial_dir: Path
    status: str  # finished | failed
    valid: bool
    error_class: str | None = None
    error_kind: str | None = None  # handled | unexpected
    error_message: str | None = None
    run_id: str | None = None
    throughput: float | None = None
    throughput_unit: str | None = None
    p99_ms: float | None = None
    quality: dict[str, float] = field(default_factory=dict)  # the driver's figures of merit


def _now_iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


# meta.json's "identity" (tag benchflow.identity): its config_hash and params come from
# the validated config in canonical form; absent (older trials): from the config's text
IDENTITY = "value"


def trial_config_hash(spec: TrialSpec) -> str:
    """The config hash a trial of ``spec`` records (what resume compares)."""
    from drivers import discovery

    return config_hash(spec, discovery.info(spec.service.driver).version)


def _new_trial(
    spec: TrialSpec, repetition: int, sweep: SweepInfo | None, attempt: int
) -> tuple[str, Path, dict, object]:
    """A fresh trial id and directory, its initial meta.json (status running), and the
    driver's installed info."""
    cfg = spec.cfg
    trial_id = uuid.uuid4().hex
    trial_dir = Path(cfg.results_dir) / cfg.scenario / trial_id
    (trial_dir / "logs").mkdir(parents=True, exist_ok=True)
    from drivers import discovery

    driver_info = discovery.info(spec.service.driver)
    started = time.time()
    me = psutil.Process()
    meta = {
        "trial_id": trial_id,
        "status": "running",
        "scenario": cfg.scenario,
        "experiment": cfg.tracking.experiment,
        # Credentials never go to disk: a URI with a password is stored masked, and
        # `benchflow sync --tracking-uri` (or MLFLOW_TRACKING_USERNAME/PASSWORD) supplies them.
        "tracking_uri": mask(tracking.resolved_uri(cfg.tracking.uri), set())
        if cfg.tracking.upload
        else None,
        "service": spec.service.name,
        "driver": spec.service.driver,
        "driver_package": f"{driver_info.package}=={driver_info.version}",
        "driver_version": driver_info.version,
        "config_hash": config_hash(spec, driver_info.version),
        "repetition": repetition,
        "repetitions": cfg.repetitions,
        "attempt": attempt,
        "seed": cfg.seed,  # the config's (part of its hash)
        # what this repetition runs with: the schedule and the driver's random draws
        "seed_effective": spec.seed_for(repetition),
        # where it stands in the sweep's order (docs/configuration.md#order-of-execution-and-seeds)
        "order": {
            "mode": cfg.order,
            "position": repetition if sweep is None else sweep.position,
        },
        "identity": IDENTITY,
        "target": cfg.target,  # NAME/VERSION once resolved
        "target_ref": spec.target.ref if spec.target else None,  # as asked: NAME@ALIAS
        "target_keys": spec.target.spec.keys() if spec.target else [],
        "overrides": [mask_override(o) for o in _user_overrides(spec)],
        "run_name": _run_name(spec, repetition),
        "sweep": None if sweep is None else sweep.__dict__,
        "started_at": _now_iso(started),
        "started_at_epoch": started,
        "process": {"host": socket.gethostname(), "pid": me.pid, "create_time": me.create_time()},
        "lineage": lineage.collect(spec.driver_cls.client_library),
        "resources": spec.service.resources.model_dump(),
        "warnings": [],
        "timings_s": {},
    }
    if spec.cfg.trace.path is not None:  # what was replayed, byte for byte
        from benchflow.workload.trace import trace_sha256

        meta.setdefault("lineage", {})["trace"] = {
            "path": str(spec.cfg.trace.path),
            "sha256": trace_sha256(spec.cfg.trace.path),
        }
    results.write_yaml(trial_dir / "effective_config.yaml", redact_tree(spec.resolved))
    results.write_json(trial_dir / "meta.json", meta)
    return trial_id, trial_dir, meta, driver_info


def run_trial(
    spec: TrialSpec, repetition: int = 0, sweep: SweepInfo | None = None, attempt: int = 0
) -> TrialOutcome:
    """Run one trial; ``attempt`` counts retries of the same repetition (0: the first)."""
    cfg = spec.cfg
    trial_id, trial_dir, meta, driver_info = _new_trial(spec, repetition, sweep, attempt)

    outcome = TrialOutcome(trial_id, trial_dir, "failed", False)
    with trial_logging(trial_dir / "logs", trial_id, spec.resolved):
        log.info(
            "trial %s: %s (repetition %d) -> %s", trial_id, spec.service.name, repetition, trial_dir
        )
        _warn(meta, spec, driver_info)
        results.write_json(trial_dir / "meta.json", meta)
        try:
            budget_from = sweep.started_at if sweep and sweep.started_at else _PROCESS_START
            limits = enforced(cfg.limits, budget_from, time.time())
            # A placement pins a process: the worker's, never the harness's own.
            if limits.active or spec.service.isolation.mode != "none" or cfg.placement.active:
                from benchflow.run import supervisor

                res = supervisor.run(spec, trial_dir, meta, limits)
            else:
                res = _measure(spec, trial_id, trial_dir, meta)
            meta["status"] = "finished"
            outcome.status, outcome.valid = "finished", res.validity.valid
            outcome.throughput, outcome.throughput_unit = res.throughput.value, res.throughput.unit
            outcome.p99_ms = res.latency_ms.p99
            outcome.quality = dict(res.quality)
            if not res.validity.valid:
                log.warning("trial marked invalid: %s", "; ".join(res.validity.reasons))
            # A finished trial leaves no state to resume from.
            shutil.rmtree(
                state_dir_for(Path(cfg.data_dir).expanduser(), meta["config_hash"], repetition),
                ignore_errors=True,
            )
        except BaseException as exc:
            failure = describe(exc)
            meta["status"] = "failed"
            meta["error"] = failure.record()
            if isinstance(exc, LimitExceeded):
                meta["limit"] = exc.details
            (trial_dir / "logs" / "traceback.txt").write_text(failure.traceback)
            outcome.error_class, outcome.error_kind = failure.error_class, failure.kind
            outcome.error_message = failure.message
            if failure.kind == "handled":
                log.error("trial failed [%s]: %s", failure.error_class, failure.message)
            else:
                log.error(
                    "trial failed with an unexpected %s: %s\n%s",
                    failure.error_class,
                    failure.message,
                    failure.traceback.rstrip(),
                )
            if not isinstance(exc, Exception):  # Ctrl-C, SystemExit: record, then stop
                _finish_meta(trial_dir, meta)
                raise
        _finish_meta(trial_dir, meta)
        _export(trial_dir, cfg)
        if cfg.tracking.upload:
            outcome.run_id = _upload(trial_dir, cfg)
    return outcome


def _export(trial_dir: Path, cfg) -> None:
    """The Prometheus textfile of the trial, when asked for; never fails the trial."""
    if not cfg.monitor.textfile_dir:
        return
    from benchflow.tracking import prometheus

    try:
        path = prometheus.export_trial(trial_dir, Path(cfg.monitor.textfile_dir).expanduser())
        log.info("summary exported to %s", path)
    except Exception as exc:
        log.warning("could not write the Prometheus textfile: %s", exc)


def record_unrun_trial(
    spec: TrialSpec,
    repetition: int,
    sweep: SweepInfo | None,
    error_class: str,
    message: str,
    attempt: int = 0,
) -> TrialOutcome:
    """Record a trial that never ran (e.g. its Slurm job died first) as a failed trial."""
    trial_id, trial_dir, meta, _ = _new_trial(spec, repetition, sweep, attempt)
    meta["process"] = None  # nothing ran here
    meta["lineage"]["slurm"] = {}  # this process is the submitter, not the job
    meta["status"] = "failed"
    meta["error"] = {"class": error_class, "message": message}
    _finish_meta(trial_dir, meta)
    outcome = TrialOutcome(trial_id, trial_dir, "failed", False, error_class)
    if spec.cfg.tracking.upload:
        outcome.run_id = _upload(trial_dir, spec.cfg)
    return outcome


_PROCESS_START = psutil.Process().create_time()  # a run without -m: its budget starts here


def _warn(meta: dict, spec: TrialSpec, driver_info) -> None:
    """Warnings shown on the console and recorded with the trial (meta + MLflow tags)."""
    if driver_info.deprecated:
        why = driver_info.deprecated if isinstance(driver_info.deprecated, str) else ""
        msg = f"{driver_info.name} ({driver_info.package} {driver_info.version}) is deprecated"
        meta["deprecated"] = True
        meta["warnings"].append(f"{msg}: {why}" if why else msg)
    if needs_declared(spec.driver_cls, spec.cfg.service):
        for short in host_shortfalls(spec.service.resources):
            meta["warnings"].append(f"{spec.service.name} {short}")
    for w in meta["warnings"]:
        log.warning("%s", w)


def _finish_meta(trial_dir: Path, meta: dict) -> None:
    ended = time.time()
    meta["ended_at"], meta["ended_at_epoch"] = _now_iso(ended), ended
    results.write_json(trial_dir / "meta.json", meta)


def _upload(trial_dir: Path, cfg) -> str | None:
    t0 = time.perf_counter()
    try:
        c = tracking.client(
            cfg.tracking.uri, cfg.tracking.http_timeout_s, cfg.tracking.http_retries
        )
        run_id = tracking.upload_trial(trial_dir, c)
    except Exception as exc:
        log.warning(
            "could not log to MLflow (%s: %s); the results are safe in %s — "
            "run `benchflow sync` when the tracking server is back",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
            trial_dir,
        )
        return None
    log.info("logged to MLflow run %s in %.2f s", run_id, time.perf_counter() - t0)
    return run_id


def _user_overrides(spec: TrialSpec) -> list[str]:
    """The overrides as given (without the ``repetition_index`` a sweep's order adds)."""
    return [o for o in spec.overrides if not o.startswith(f"{REPETITION_KEY}=")]


def _run_name(spec: TrialSpec, repetition: int) -> str:
    parts = [
        mask_override(o) for o in _user_overrides(spec) if not o.startswith(("hydra", "scenario="))
    ]
    name = " ".join([spec.service.name, *[p for p in parts if not p.startswith("service=")]])
    if spec.cfg.repetitions > 1:
        name += f" #{repetition}"
    return name[:240]


def measure(spec: TrialSpec, trial_dir: Path, meta: dict):
    """Steps 2–4 of a trial (SUT up, load, result files); in process or in a worker."""
    return _measure(spec, meta["trial_id"], trial_dir, meta)


def _measure(spec: TrialSpec, trial_id: str, trial_dir: Path, meta: dict):
    cfg = spec.cfg
    timings = meta["timings_s"]
    ctx = TrialContext(
        trial_id,
        spec.run_settings_for(meta["repetition"]),
        trial_dir,
        Path(cfg.data_dir).expanduser(),
        config_hash=meta["config_hash"],
        repetition=meta["repetition"],
        target=meta.get("target"),
    )
    driver = spec.driver_cls(spec.service, ctx)
    monitor = None
    ok = False
    t = time.perf_counter()
    try:
        driver.setup()
        timings["setup"] = time.perf_counter() - t
        # A SUT launched from a container image exports its digest (benchflow.sut.servers).
        digest = os.environ.get(lineage.CONTAINER_DIGEST_ENV)
        if digest and meta["lineage"].get("container_digest") != digest:
            meta["lineage"]["container_digest"] = digest
            results.write_json(trial_dir / "meta.json", meta)
        sut_pids = driver.sut_pids()
        monitor = Monitor(
            cfg.monitor.interval_s,
            sut_pids=driver.sut_pids if sut_pids else None,
            harness_pids=lambda: [os.getpid()],
            gpu=cfg.monitor.gpu,
            server=driver.server_sample if driver.samples_server() else None,
        ).start()
        phases = _phases(cfg, driver.planned_requests(), spec.seed_for(meta["repetition"]))
        measure_idx = len(phases) - 1

        def before(i: int) -> None:
            if i == measure_idx:
                driver.measure_start()

        t = time.perf_counter()
        with _progress(cfg, phases) as progress:
            if cfg.clients > 1:
                from benchflow.load.clients import resolve_launch, run_clients

                launch = resolve_launch(cfg.client_launch, cfg.clients)
                recs = run_clients(
                    driver, phases, cfg.clients, cfg.stall_timeout_s, before, launch, ctx.extra
                )
            else:
                engine = Engine(driver, cfg.concurrency, cfg.stall_timeout_s)
                progress.engine = engine
                recs = engine.run(phases, before=before)
        timings["load"] = time.perf_counter() - t
        rec = recs[-1]
        ctx.extra.update(driver.measure_end())
        ctx.extra.update(driver.summarize(rec))
        slice_extra = {key: driver.summarize(sub) for key, sub in rec.subs.items()}
        samples = monitor.stop()
        t = time.perf_counter()
        quality = spec.driver_cls.check_outputs(driver.quality())
        timings["quality"] = time.perf_counter() - t
        ok = True
    finally:
        t = time.perf_counter()
        if monitor is not None:
            monitor.stop()
        try:
            driver.teardown()
        except Exception as exc:
            log.error("teardown failed: %s", exc)
        timings["teardown"] = time.perf_counter() - t
        try:  # the driver's own metadata is kept whether the trial finished or failed
            ctx.write_custom()
        except DriverError as exc:
            if ok:
                raise
            log.error("%s", exc)
    t = time.perf_counter()
    window = (rec.wall_start_s, rec.wall_start_s + rec.elapsed_s())
    meta["window_start_epoch"] = rec.wall_start_s
    if rec.shards:  # clients > 1: where each shard ran, its clock and its own figures
        # (a worker's meta has no lineage: the supervisor files them there, supervisor.py)
        meta.setdefault("lineage", {})["shards"] = rec.shards
    res = results.build(
        trial_id=trial_id,
        timestamp=meta["started_at"],
        driver_cls=spec.driver_cls,
        spec=spec,
        rec=rec,
        samples=samples,
        window=window,
        sut_in_process=not sut_pids,
        phases=ctx.phases,
        extra=ctx.extra,
        quality=quality,
        notes=ctx.notes,
        rules=cfg.validity,
        invalid_reasons=ctx.invalid_reasons,
        slice_extra=slice_extra,
        workload=_workload_summary(cfg, rec),
    )
    results.write_result_files(trial_dir, res, rec, samples, rec.wall_start_s, spec.driver_cls)
    timings["result"] = time.perf_counter() - t
    return res


def _workload_summary(cfg, rec) -> dict:
    """The workload's shape as the result records it (docs/workloads.md)."""
    out: dict = {}
    if cfg.mix:
        out["mix"] = dict(cfg.mix)
    if cfg.stages:
        out["stages"] = [s.model_dump() for s in cfg.stages]
    if cfg.arrival == "gamma" and cfg.open_loop:
        out["arrival_burstiness"] = cfg.arrival_burstiness
    if cfg.trace.path is not None:
        out["trace"] = {**cfg.trace.model_dump(), "requests": rec.started}
    return out


def _phases(cfg, planned: int | None = None, seed: int | None = None) -> list[Phase]:
    """The warm-up and measured phases; ``seed``: the repetition's (default: the config's).

    Stages: the warm-up runs at the first stage's rate or concurrency. A trace: the warm-up replays
    the trace's first ``warmup_s``, the measured phase the whole (cut) trace.
    """
    seed = cfg.seed if seed is None else seed
    stages = tuple(Stage(s.rate, s.duration_s, s.ramp, s.concurrency) for s in cfg.stages or ())
    trace = cfg.trace if cfg.trace.path is not None else None
    common = dict(
        concurrency=cfg.concurrency,
        rate=cfg.rate,
        arrival=cfg.arrival,
        burstiness=cfg.arrival_burstiness,
        trace=trace,
        mix=tuple((cfg.mix or {}).items()),
        seed=seed,
    )
    phases = []
    if cfg.warmup_s > 0:
        warm = common
        if stages and stages[0].rate is not None:  # at the first stage's rate
            warm = dict(common, rate=stages[0].rate)
        elif stages:  # at the first stage's concurrency (the same workers, some idle)
            warm = dict(common, stages=(replace(stages[0], duration_s=cfg.warmup_s),))
        phases.append(Phase("warmup", duration_s=cfg.warmup_s, stream=1, **warm))
    requests = cfg.requests
    if planned is not None:  # the driver's own item count (one pass over its set)
        requests = planned if requests is None else min(requests, planned)
    duration, goal = cfg.duration_s, None
    if duration == "auto":  # scheduled for max_s, ended by the engine once precise enough
        duration = cfg.precision.max_s
        goal = cfg.precision.goal() if requests is None else None  # a count still wins
    if stages:
        duration = sum(s.duration_s for s in stages)
    if trace is not None:
        duration = None  # the trace's own length
    phases.append(
        Phase(
            "measure",
            duration_s=duration,
            requests=requests,
            stream=2,
            precision=goal,
            stages=stages,
            **common,
        )
    )
    return phases


class _progress:
    """A progress bar on a terminal (or when asked); silent otherwise."""

    def __init__(self, cfg, phases: list[Phase]) -> None:
        self.enabled = cfg.progress == "on" or (cfg.progress == "auto" and sys.stdout.isatty())
        self.phases = phases
        self.engine: Engine | None = None
        self._stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        total = sum(p.duration_s or 0 for p in self.phases if p.requests is None)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]} requests"),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("load", total=total or None, done=0)
            t0 = time.monotonic()
            while not self._stop.wait(0.25):
                rec = self.engine.recorder if self.engine else None
                bar.update(
                    task,
                    completed=min(time.monotonic() - t0, total or 0),
                    done=rec.done() if rec else 0,
                )

    def __exit__(self, *exc) -> None:
        self._stop.set()
