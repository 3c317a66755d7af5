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

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class PercentileInterval(_Block):
    """A latency percentile and its confidence interval (ms; docs/metrics.md#precision)."""

    estimate_ms: float | None = None
    ci_low_ms: float | None = None  # null: too few samples for a finite interval
    ci_high_ms: float | None = None
    rel_half_width: float | None = None  # max(estimate − low, high − estimate) / estimate
    # duration_s=auto, judged percentiles: the half-width the stop rule saw when the
    # phase ended (the one above also counts the requests that completed after)
    rel_half_width_at_stop: float | None = None


class Precision(_Block):
    """How well the latency percentiles are known; with ``duration_s=auto`` also why the
    measured phase ended (docs/metrics.md#precision)."""

    auto: bool  # duration_s=auto
    confidence: float
    rel: float | None = None  # auto: the goal (relative half-width)
    judged: list[str] = Field(default_factory=list)  # auto: the percentiles the goal covers
    reached: bool | None = None  # auto: every judged percentile within ±rel when it ended
    stopped_by: Literal["precision", "max_s"] | None = None  # auto: what ended the phase
    measured_s: float = 0.0  # the measured window's length
    samples: int = 0  # successful requests in the latency histogram (what was judged)
    samples_at_stop: int | None = None  # auto: those the stop rule saw when it ended the phase
    percentiles: dict[str, PercentileInterval] = Field(default_factory=dict)


class Trend(_Block):
    """Fitted change over the window of per-second figures, relative to their mean
    (docs/metrics.md#steady-state-and-saturation)."""

    seconds: int
    throughput: float | None = None  # completed requests per second
    throughput_ci: float | None = None  # 95 % half-width of that change
    latency_p50: float | None = None
    latency_p50_ci: float | None = None


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
    # offered vs served (docs/metrics.md#offered-and-completed-load); null in results
    # written before these existed
    offered_rate: float | None = None  # requests started within the window / window
    completed_rate: float | None = None  # requests completed within the window / window
    saturated: bool | None = None  # open loop: the SUT did not keep up (null: not judged)
    steady: bool | None = None  # no trend beyond validity.max_*_trend (null: too short)
    trend: Trend | None = None
    precision: Precision | None = None


class Validity(_Block):
    valid: bool
    reasons: list[str] = Field(default_factory=list)


class Slice(_Block):
    """A class's or a stage's share of a trial (docs/workloads.md): the same figures as
    the whole, from that share's own histograms; a stage's throughput is over its own
    window, a class's over the trial's."""

    weight: float | None = None  # a class: its share of the mix
    target_rate: float | None = None  # a stage: its offered rate (a ramp: the mean)
    concurrency: int | None = None  # a closed-loop stage: its requests in flight
    duration_s: float | None = None  # a stage: its length
    throughput: Throughput
    rates: dict[str, float]
    latency_ms: Distribution
    service_time_ms: Distribution
    ttfb_ms: Distribution | None = None
    errors: Errors
    achieved_rate: float | None = None  # open loop: requests started per second
    offered_rate: float | None = None
    completed_rate: float | None = None
    saturated: bool | None = None
    extra: dict[str, float] = Field(default_factory=dict)  # the driver's summarize()
    validity: Validity


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
    # a mix's classes and a staged trial's stages ("0", "1", ...): docs/workloads.md
    classes: dict[str, Slice] = Field(default_factory=dict)
    stages: dict[str, Slice] = Field(default_factory=dict)
    # the workload's own summary: drawn lengths, the trace replayed (docs/workloads.md)
    workload: dict[str, Any] = Field(default_factory=dict)


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
    for key in ("classes", "stages"):  # a slice's throughput is a number, as the whole's
        for name, sl in (d.get(key) or {}).items():
            sl = dict(sl, throughput=sl["throughput"]["value"])
            _flatten_numbers(sl, f"{key}.{name}", out)
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
