"""Synthetic trials with known answers, for statistics tests, benches and demos.

:func:`write_trial` writes a trial directory exactly as a real trial leaves it
(``meta.json``, ``effective_config.yaml``, ``metrics.json``, ``histograms.json``,
``timeseries.csv``, ``system.csv``), with latencies drawn from a log-normal whose
median is given; :func:`benchflow.tracking.upload_trial` then logs it like any
other. Nothing here measures anything: the runs are marked with the tag-able
param ``synthetic=true`` in their config and ``notes`` in metrics.json.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchflow import results
from benchflow.load.histogram import LogHistogram
from benchflow.results.identity import flatten


@dataclass
class SynthTrial:
    """What one synthetic trial looks like."""

    scenario: str
    experiment: str
    service: str = "synth"
    config: dict[str, Any] = field(default_factory=dict)  # top-level keys (concurrency, ...)
    service_config: dict[str, Any] = field(default_factory=dict)
    latency_median_ms: float = 2.0
    latency_sigma: float = 0.3  # log-normal shape within the run
    throughput: float = 1000.0
    requests: int = 2000
    seconds: int = 5
    quality: dict[str, float] = field(default_factory=dict)
    ttfb_median_ms: float | None = None
    target: str | None = None
    target_keys: list[str] = field(default_factory=list)
    repetition: int = 0
    seed: int = 0
    sweep: dict[str, Any] | None = None
    tracking_uri: str | None = None
    valid: bool = True


def write_trial(results_dir: Path, t: SynthTrial) -> Path:
    """Write one synthetic trial directory; returns it."""
    rng = np.random.default_rng(t.seed)
    trial_id = uuid.uuid4().hex
    tdir = Path(results_dir) / t.scenario / trial_id
    (tdir / "logs").mkdir(parents=True, exist_ok=True)
    now = time.time()
    cfg = {
        "service": {"name": t.service, "driver": "noop", "mode": "embedded", **t.service_config},
        "tracking": {"mode": "local", "uri": t.tracking_uri, "experiment": t.experiment},
        "scenario": t.scenario,
        "target": t.target,
        "batch": 1,
        "concurrency": 1,
        "rate": None,
        "duration_s": t.seconds,
        "warmup_s": 0,
        "repetitions": 1,
        "seed": 0,
        "clients": 1,
        "synthetic": True,
        **t.config,
    }
    hists = {}
    lat = rng.lognormal(np.log(t.latency_median_ms * 1e6), t.latency_sigma, t.requests)
    for name, values in (("latency", lat), ("service", lat * 0.95)):
        h = LogHistogram()
        h.record_many(values)
        hists[name] = h
    ttfb = None
    if t.ttfb_median_ms:
        ttfb = LogHistogram()
        ttfb.record_many(rng.lognormal(np.log(t.ttfb_median_ms * 1e6), t.latency_sigma, t.requests))
        hists["ttfb"] = ttfb
        itl = LogHistogram()
        itl.record_many(rng.lognormal(np.log(t.ttfb_median_ms * 1e5), 0.2, t.requests * 10))
        hists["x.itl"] = itl
    res = results.TrialResult(
        trial_id=trial_id,
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
        component="calibration",
        service=t.service,
        scenario=t.scenario,
        config={k: cfg.get(k) for k in ("batch", "concurrency", "clients", "rate")},
        throughput=results.Throughput(value=t.throughput, unit="requests_per_s"),
        rates={"requests_per_s": t.throughput, "ok_requests_per_s": t.throughput},
        latency_ms=results.distribution(hists["latency"]),
        service_time_ms=results.distribution(hists["service"]),
        ttfb_ms=results.distribution(ttfb) if ttfb else None,
        distributions={"itl": results.lenient_distribution(hists["x.itl"])} if ttfb else {},
        load=results.Load(
            mode="closed",
            concurrency=int(cfg["concurrency"]),
            clients=1,
            target_rate=None,
            achieved_rate=t.throughput,
            arrival=None,
            duration_s=t.seconds,
            requests=None,
            warmup_s=0,
            elapsed_s=t.seconds,
            completed=t.requests,
            dispatch_lag_ms=None,
        ),
        resource=results.Resource(
            cpu_util=float(rng.uniform(20, 90)), ram_mb=float(rng.uniform(100, 400))
        ),
        errors=results.Errors(rate=0.0, count=0, timeouts=0),
        quality=t.quality,
        validity=results.Validity(
            valid=t.valid, reasons=[] if t.valid else ["synthetic: marked invalid"]
        ),
        notes="synthetic trial (benchflow.synthetic): no measurement",
    )
    results.write_json(tdir / "metrics.json", res.model_dump(mode="json"))
    results.write_json(tdir / "histograms.json", {k: h.to_dict() for k, h in hists.items()})
    per_s = np.maximum(rng.normal(t.throughput, t.throughput * 0.03, t.seconds), 0)
    results.write_csv(
        tdir / "timeseries.csv",
        [
            {
                "second": s,
                "throughput": float(per_s[s]),
                "requests": int(per_s[s]),
                "errors": 0,
                "latency_ms.p50": res.latency_ms.p50,
                "latency_ms.p99": res.latency_ms.p99,
            }
            for s in range(t.seconds)
        ],
    )
    results.write_csv(
        tdir / "system.csv",
        [{"t": now + s, "second": s, "host.cpu_util": 50.0} for s in range(t.seconds)],
    )
    results.write_yaml(tdir / "effective_config.yaml", cfg)
    meta = {
        "trial_id": trial_id,
        "status": "finished",
        "scenario": t.scenario,
        "experiment": t.experiment,
        "tracking_uri": t.tracking_uri,
        "service": t.service,
        "driver": "noop",
        "driver_package": "benchflow.synthetic",
        "config_hash": _hash(cfg),
        "repetition": t.repetition,
        "repetitions": 1,
        "seed": 0,
        "target": t.target,
        "target_ref": t.target,
        "target_keys": t.target_keys,
        "overrides": [f"{k}={v}" for k, v in flatten(t.config).items()],
        "run_name": f"synthetic {t.service} {t.target or ''} #{t.repetition}",
        "sweep": t.sweep,
        "started_at": res.timestamp,
        "started_at_epoch": now,
        "ended_at_epoch": now + t.seconds,
        "process": {"host": socket.gethostname(), "pid": 0, "create_time": 0},
        "timings_s": {},
    }
    results.write_json(tdir / "meta.json", meta)
    return tdir


def _hash(cfg: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def start_sweep(client, experiment: str, scenario: str, sweep_id: str | None = None) -> dict:
    """A sweep parent run for synthetic trials; returns the ``sweep`` block of meta.json."""
    from benchflow import tracking

    sweep_id = sweep_id or f"synthetic-{uuid.uuid4().hex[:8]}"
    parent = tracking.start_sweep(client, experiment, sweep_id, scenario, ["synthetic=true"])
    return {
        "sweep_id": sweep_id,
        "sweep_dir": "",
        "parent_run_id": parent,
        "tracking_uri": client.tracking_uri,
        "job_num": 0,
    }
