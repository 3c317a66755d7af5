"""The per-trial result: its schema (metrics.json), validity rules, and the files
of ``results/<scenario>/<trial_id>/``.

Files of a trial directory:

- ``meta.json``         identity, status (running → finished | failed), lineage,
                        timings; written first, so a killed trial leaves
                        ``status: running`` behind and is reported incomplete.
- ``effective_config.yaml``  the resolved config, secrets redacted.
- ``metrics.json``      the result below; ``metrics.csv`` the same, one flat row.
- ``timeseries.csv``    the 1-second series of the measured phase.
- ``system.csv``        the monitor's samples.
- ``histograms.json``   the latency histograms (mergeable; used to resample requests).
- ``logs/``             the trial's logs and any server's stdout/stderr.
- ``upload.json``       written by tracking once the trial is in MLflow.
- ``custom.json``, ``custom/``  the driver's own metadata and files (drivers.base.TrialContext).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from benchflow.load.recorder import Recording
from benchflow.monitor import FIELDS, Sample

SCHEMA_VERSION = 1
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
# The fewest successful requests for which a percentile is meaningful: it needs at
# least one sample above it. A percentile is left out (null) below its minimum; a
# trial of a load driver is invalid when it cannot report p99 (a driver whose
# headline is quality gets a note instead: Driver.headline_figures).
MIN_SAMPLES = {"p50": 2, "p90": 10, "p95": 20, "p99": 100, "p999": 1000}


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Throughput(_Block):
    value: float
    unit: str


class Distribution(_Block):
    """Milliseconds. Percentiles are nearest-rank, within 0.1% above the exact value."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p999: float | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    count: int = 0


class Resource(_Block):
    gpu_util: float | None = None
    gpu_mem_mb: float | None = None
    cpu_util: float | None = None
    ram_mb: float | None = None
    scope: Literal["sut_process", "harness_process"] = "harness_process"
    host_cpu_util: float | None = None
    host_ram_mb: float | None = None
    harness_cpu_util: float | None = None
    detail: dict[str, dict[str, float]] = Field(default_factory=dict)


class Errors(_Block):
    rate: float
    count: int
    timeouts: int
    by_class: dict[str, int] = Field(default_factory=dict)


class Load(_Block):
    mode: Literal["closed", "open"]
    concurrency: int
    clients: int
    target_rate: float | None
    achieved_rate: float | None
    arrival: str | None
    duration_s: float | None
    requests: int | None
    warmup_s: float
    elapsed_s: float
    completed: int
    dispatch_lag_ms: Distribution | None  # open loop only: start - intended


class Validity(_Block):
    valid: bool
    reasons: list[str] = Field(default_factory=list)


class TrialResult(_Block):
    schema_version: int = SCHEMA_VERSION
    trial_id: str
    timestamp: str
    component: str
    service: str
    scenario: str
    config: dict[str, Any]
    throughput: Throughput
    rates: dict[str, float]
    latency_ms: Distribution  # from the intended start: what a waiting user sees
    service_time_ms: Distribution  # from the actual start: what the SUT took
    ttfb_ms: Distribution | None = None  # first byte/token, from the intended start
    distributions: dict[str, Distribution] = Field(default_factory=dict)  # driver-specific
    load: Load
    resource: Resource
    errors: Errors
    quality: dict[str, float] = Field(default_factory=dict)
    phases: dict[str, dict[str, float]] = Field(default_factory=dict)
    extra: dict[str, float] = Field(default_factory=dict)
    validity: Validity
    notes: str | None = None


# -- building ---------------------------------------------------------------------
def distribution(hist) -> Distribution:
    n = hist.count
    d = {
        k: (None if n < MIN_SAMPLES[k] else v)
        for k, v in hist.summary_ms(PERCENTILES).items()
        if k in PERCENTILES
    }
    summ = hist.summary_ms({})
    return Distribution(**d, mean=summ["mean"], min=summ["min"], max=summ["max"], count=n)


def _lenient(hist) -> Distribution:
    """For auxiliary figures (lag, per-token times): every percentile that exists."""
    s = hist.summary_ms(PERCENTILES)
    return Distribution(
        **{k: s[k] for k in PERCENTILES},
        mean=s["mean"],
        min=s["min"],
        max=s["max"],
        count=hist.count,
    )


def size_rate(size_per_s: float, unit: str) -> tuple[float, str]:
    if unit == "bytes":
        return size_per_s / 2**20, "MiB_per_s"
    return size_per_s, f"{unit}_per_s"


def build(
    *,
    trial_id: str,
    timestamp: str,
    driver_cls,
    spec,
    rec: Recording,
    samples: list[Sample],
    window: tuple[float, float],
    sut_in_process: bool,
    phases: dict,
    extra: dict,
    quality: dict,
    notes: list[str],
    rules,
    invalid_reasons: list[str] = (),
) -> TrialResult:
    cfg = spec.cfg
    elapsed = rec.elapsed_s()
    completed = rec.total
    req_rate = completed / elapsed if elapsed else 0.0
    size_value, size_unit = size_rate(
        rec.size_ok / elapsed if elapsed else 0.0, driver_cls.size_unit
    )
    ok_rate = rec.ok / elapsed if elapsed else 0.0
    if driver_cls.headline(spec.service) == "size":
        throughput = Throughput(value=size_value, unit=size_unit)
    else:
        throughput = Throughput(value=ok_rate, unit="requests_per_s")
    rates = {"requests_per_s": req_rate, "ok_requests_per_s": ok_rate, size_unit: size_value}

    errors_n = sum(rec.errors.values())
    errors = Errors(
        rate=errors_n / completed if completed else 0.0,
        count=errors_n,
        timeouts=rec.timeouts,
        by_class=dict(rec.errors),
    )
    achieved = rec.achieved_rate() if cfg.rate else ok_rate
    load = Load(
        mode="open" if cfg.rate else "closed",
        concurrency=cfg.concurrency,
        clients=cfg.clients,
        target_rate=cfg.rate,
        achieved_rate=achieved,
        arrival=cfg.arrival if cfg.rate else None,
        duration_s=None if cfg.requests else cfg.duration_s,
        requests=cfg.requests,
        warmup_s=cfg.warmup_s,
        elapsed_s=elapsed,
        completed=completed,
        dispatch_lag_ms=_lenient(rec.hist["lag"]) if cfg.rate else None,
    )
    summary = _monitor_summary(samples, window)
    resource = Resource(
        gpu_util=summary.get("gpu.util", {}).get("avg"),
        gpu_mem_mb=summary.get("gpu.mem_mb", {}).get("max"),
        cpu_util=summary.get("sut.cpu_util", {}).get("avg"),
        ram_mb=summary.get("sut.ram_mb", {}).get("max"),
        scope="harness_process" if sut_in_process else "sut_process",
        host_cpu_util=summary.get("host.cpu_util", {}).get("avg"),
        host_ram_mb=summary.get("host.ram_mb", {}).get("max"),
        harness_cpu_util=summary.get("harness.cpu_util", {}).get("avg"),
        detail=summary,
    )
    ttfb = rec.hist["ttfb"]
    distributions = {k[2:]: _lenient(h) for k, h in rec.hist.items() if k.startswith("x.")}
    result = TrialResult(
        trial_id=trial_id,
        timestamp=timestamp,
        component=driver_cls.family,
        service=spec.service.name,
        scenario=cfg.scenario,
        config={
            "gpus": spec.service.resources.gpus,
            "batch": cfg.batch,
            "concurrency": cfg.concurrency,
            "nodes": spec.service.resources.nodes,
            "clients": cfg.clients,
            "rate": cfg.rate,
        },
        throughput=throughput,
        rates=rates,
        latency_ms=distribution(rec.hist["latency"]),
        service_time_ms=distribution(rec.hist["service"]),
        ttfb_ms=distribution(ttfb) if ttfb.count else None,
        distributions=distributions,
        load=load,
        resource=resource,
        errors=errors,
        quality=quality,
        phases=phases,
        extra=extra,
        validity=Validity(valid=True),
        notes="; ".join(notes) or None,
    )
    quality_headline = getattr(driver_cls, "headline_figures", "load") == "quality"
    result.validity = judge(
        result, rec, rules, invalid_reasons, few_samples_invalid=not quality_headline
    )
    shortfall = too_few_samples(result.latency_ms.count)
    if quality_headline and shortfall:
        result.notes = "; ".join(
            [
                *notes,
                f"{shortfall}: latency percentiles without enough samples are null "
                "(not a reason for invalidity: this driver's headline is quality)",
            ]
        )
    return result


def _monitor_summary(samples, window) -> dict[str, dict[str, float]]:
    from benchflow.monitor import Monitor

    return Monitor.summarize(samples, *window)


def too_few_samples(n: int) -> str | None:
    """Why ``n`` successful requests cannot give a p99 (None: they can)."""
    if n < MIN_SAMPLES["p99"]:
        return f"only {n} successful requests; p99 needs at least {MIN_SAMPLES['p99']}"
    return None


def judge(
    result: TrialResult, rec: Recording, rules, driver_reasons=(), few_samples_invalid: bool = True
) -> Validity:
    """The reasons a result should not be trusted (none: valid).

    ``driver_reasons`` are what the driver itself found (e.g. the SUT restarted).
    ``few_samples_invalid``: too few requests for a p99 is a reason (load drivers);
    drivers whose headline is quality turn it off (``Driver.headline_figures``).
    """
    reasons = list(driver_reasons)
    shortfall = too_few_samples(result.latency_ms.count)
    if shortfall and few_samples_invalid:
        reasons.append(shortfall)
    load = result.load
    if load.target_rate and load.achieved_rate is not None:
        short = 1 - load.achieved_rate / load.target_rate
        if short > rules.max_rate_shortfall:
            reasons.append(
                f"generator fell {short:.1%} short of the target rate "
                f"({load.achieved_rate:.1f} of {load.target_rate:g} req/s; "
                f"allowed {rules.max_rate_shortfall:.0%})"
            )
    if result.errors.rate > rules.max_error_rate:
        reasons.append(
            f"error rate {result.errors.rate:.1%} above {rules.max_error_rate:.0%} "
            f"({', '.join(f'{k}: {v}' for k, v in result.errors.by_class.items())})"
        )
    if rec.abandoned:
        reasons.append("the SUT stopped answering: phase abandoned by the stall timeout")
    if rec.failed_clients:
        reasons.append(
            f"{len(rec.failed_clients)} client shard(s) failed: " + "; ".join(rec.failed_clients)
        )
    return Validity(valid=not reasons, reasons=reasons)


# -- MLflow's view: dotted numeric metrics ---------------------------------------
def metrics_flat(result: TrialResult) -> dict[str, float]:
    """The result as dotted metric names (``latency_ms.p99``); numbers only."""
    d = result.model_dump(exclude={"config": True, "resource": {"detail"}})
    out: dict[str, float] = {"throughput": result.throughput.value}
    for key in (
        "rates",
        "latency_ms",
        "service_time_ms",
        "ttfb_ms",
        "distributions",
        "load",
        "resource",
        "errors",
        "quality",
        "phases",
        "extra",
    ):
        _flatten_numbers(d.get(key), key, out)
    for name, agg in result.resource.detail.items():
        for stat, v in agg.items():
            out[f"system/{name}.{stat}"] = v
    out["valid"] = 1.0 if result.validity.valid else 0.0
    return out


def _flatten_numbers(node: Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten_numbers(v, f"{prefix}.{k}", out)
    elif isinstance(node, bool) or (isinstance(node, int | float) and math.isfinite(node)):
        out[prefix] = float(node)


# -- files ---------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def write_yaml(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def write_result_files(
    trial_dir: Path,
    result: TrialResult,
    rec: Recording,
    samples: list[Sample],
    window_start: float,
    driver_cls,
) -> None:
    write_json(trial_dir / "metrics.json", result.model_dump(mode="json"))
    flat = {
        "trial_id": result.trial_id,
        "timestamp": result.timestamp,
        "service": result.service,
        "scenario": result.scenario,
        **metrics_flat(result),
    }
    _write_csv(trial_dir / "metrics.csv", [flat])
    by_size = result.throughput.unit != "requests_per_s"
    rows = []
    for r in rec.per_second():
        rows.append(
            {
                "second": r["second"],
                "throughput": size_rate(r["size"], driver_cls.size_unit)[0] if by_size else r["ok"],
                "requests": r["ok"] + r["errors"],
                "errors": r["errors"],
                "latency_ms.p50": r["p50_ms"],
                "latency_ms.p99": r["p99_ms"],
            }
        )
    _write_csv(
        trial_dir / "timeseries.csv",
        rows,
        ["second", "throughput", "requests", "errors", "latency_ms.p50", "latency_ms.p99"],
    )
    _write_csv(
        trial_dir / "system.csv",
        [{"t": s.t, "second": s.t - window_start, **s.values} for s in samples],
        ["t", "second", *FIELDS],
    )
    write_json(trial_dir / "histograms.json", {k: h.to_dict() for k, h in rec.hist.items()})


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else [])
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_result(trial_dir: Path) -> TrialResult:
    """metrics.json, validated against the schema (raises on a corrupt file)."""
    return TrialResult.model_validate(read_json(trial_dir / "metrics.json"))
