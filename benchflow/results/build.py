"""Building a trial's result from its recording: percentiles from the merged
histograms, throughput over the measured window, errors by class, the monitor's
summary, and the validity verdict (:func:`judge`).
"""

from __future__ import annotations

from benchflow.load.recorder import Recording
from benchflow.results.monitor import Sample
from benchflow.results.schema import (
    MIN_SAMPLES,
    PERCENTILES,
    Distribution,
    Errors,
    Load,
    Resource,
    Throughput,
    TrialResult,
    Validity,
)


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
    from benchflow.results.monitor import Monitor

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
