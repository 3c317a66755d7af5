"""Building a trial's result from its recording: percentiles from the merged
histograms, throughput over the measured window, errors by class, the monitor's
summary, and the validity verdict (:func:`judge`).
"""

from __future__ import annotations

from benchflow.load import precision
from benchflow.load.recorder import Recording
from benchflow.results import steady
from benchflow.results.monitor import Sample
from benchflow.results.schema import (
    MIN_SAMPLES,
    PERCENTILES,
    Distribution,
    Errors,
    Load,
    PercentileInterval,
    Precision,
    Resource,
    Slice,
    Throughput,
    Trend,
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


def lenient_distribution(hist) -> Distribution:
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
    slice_extra: dict[str, dict] | None = None,
    workload: dict | None = None,
) -> TrialResult:
    cfg = spec.cfg
    open_loop = cfg.open_loop
    elapsed = rec.elapsed_s()
    completed = rec.total
    throughput, rates, errors = _served(rec, elapsed, spec, driver_cls)
    ok_rate = rates["ok_requests_per_s"]
    achieved = rec.achieved_rate() if open_loop else ok_rate
    target_rate = cfg.rate
    if cfg.stages and open_loop:  # the stages' mean offered rate
        total_s = sum(st.duration_s for st in cfg.stages)
        target_rate = (
            sum(_stage_rate(cfg.stages, k) * st.duration_s for k, st in enumerate(cfg.stages))
            / total_s
        )
    auto = cfg.duration_s == "auto"
    # whole seconds only: a count-bounded phase's last second is cut short
    tr = steady.trend(rec.per_second() if rec.window_ns else rec.per_second()[:-1])
    trend = Trend(**tr) if tr else None
    load = Load(
        mode="open" if open_loop else "closed",
        concurrency=cfg.concurrency,
        clients=cfg.clients,
        target_rate=target_rate,
        achieved_rate=achieved,
        arrival=("trace" if cfg.trace.path else cfg.arrival) if open_loop else None,
        duration_s=None
        if cfg.requests
        else (rec.window_s() if auto or cfg.stages or cfg.trace.path else cfg.duration_s),
        requests=cfg.requests,
        warmup_s=cfg.warmup_s,
        elapsed_s=elapsed,
        completed=completed,
        dispatch_lag_ms=lenient_distribution(rec.hist["lag"]) if open_loop else None,
        offered_rate=rec.offered_rate(),
        completed_rate=rec.completed_rate(),
        saturated=steady.saturation(rec, open_loop, rules),
        # stages change the load on purpose: a trend is expected, not a flaw
        steady=None if trend is None or cfg.stages else not steady.trend_problems(trend, rules),
        trend=trend,
        precision=_precision(rec, cfg),
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
    distributions = {
        k[2:]: lenient_distribution(h) for k, h in rec.hist.items() if k.startswith("x.")
    }
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
        workload=workload or {},
    )
    _add_slices(result, rec, spec, driver_cls, rules, slice_extra or {})
    quality_headline = getattr(driver_cls, "headline_figures", "load") == "quality"
    stage_reasons = [
        f"stage {k}: {why}" for k, sl in result.stages.items() for why in sl.validity.reasons
    ]
    result.validity = judge(
        result,
        rec,
        rules,
        [*invalid_reasons, *stage_reasons],
        few_samples_invalid=not quality_headline,
        judge_trend=not cfg.stages,  # stages change the load on purpose
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


def _stage_rate(stages, k: int) -> float:
    """Stage k's mean offered rate (a ramp's: halfway between its ends)."""
    st = stages[k]
    if not st.ramp:
        return st.rate
    return (st.rate + (stages[k - 1].rate if k else 0.0)) / 2


def _add_slices(result: TrialResult, rec: Recording, spec, driver_cls, rules, extra) -> None:
    """Each class's and each stage's own figures (``classes.<name>.*``, ``stages.<k>.*``)."""
    cfg = spec.cfg
    weights = cfg.mix or {}
    for key, sub in sorted(rec.subs.items()):
        kind, name = key.split(".", 1)
        if kind == "classes":
            sl = _slice(sub, rec.elapsed_s(), spec, driver_cls, rules, extra.get(key, {}))
            sl.weight = weights.get(name)
            result.classes[name] = sl
        else:
            k = int(name)
            st = cfg.stages[k]
            sl = _slice(sub, sub.window_s(), spec, driver_cls, rules, extra.get(key, {}))
            sl.duration_s, sl.concurrency = st.duration_s, st.concurrency
            if st.rate is not None:
                sl.target_rate = _stage_rate(cfg.stages, k)
            if sl.achieved_rate is not None and sl.target_rate:
                short = 1 - sl.achieved_rate / sl.target_rate
                if short > rules.max_rate_shortfall:
                    sl.validity.reasons.append(
                        f"generator fell {short:.1%} short of the stage's rate "
                        f"({sl.achieved_rate:.1f} of {sl.target_rate:g} req/s; "
                        f"allowed {rules.max_rate_shortfall:.0%})"
                    )
                    sl.validity.valid = False
            result.stages[name] = sl


def _served(rec: Recording, elapsed: float, spec, driver_cls):
    """Headline throughput, rates and errors of a recording over ``elapsed`` seconds (the
    whole trial's, a class's or a stage's)."""
    completed = rec.total
    ok_rate = rec.ok / elapsed if elapsed else 0.0
    size_value, size_unit = size_rate(
        rec.size_ok / elapsed if elapsed else 0.0, driver_cls.size_unit
    )
    if driver_cls.headline_for(spec.service, spec.run_settings) == "size":
        throughput = Throughput(value=size_value, unit=size_unit)
    else:
        throughput = Throughput(value=ok_rate, unit="requests_per_s")
    rates = {
        "requests_per_s": completed / elapsed if elapsed else 0.0,
        "ok_requests_per_s": ok_rate,
        size_unit: size_value,
    }
    errors_n = sum(rec.errors.values())
    errors = Errors(
        rate=errors_n / completed if completed else 0.0,
        count=errors_n,
        timeouts=rec.timeouts,
        by_class=dict(rec.errors),
    )
    return throughput, rates, errors


def _slice(sub: Recording, elapsed: float, spec, driver_cls, rules, extra: dict) -> Slice:
    throughput, rates, errors = _served(sub, elapsed, spec, driver_cls)
    latency = distribution(sub.hist["latency"])
    reasons = []
    if why := too_few_samples(latency.count):
        reasons.append(why)
    if errors.rate > rules.max_error_rate:
        reasons.append(f"error rate {errors.rate:.1%} above {rules.max_error_rate:.0%}")
    open_loop = spec.cfg.open_loop
    ttfb = sub.hist["ttfb"]
    return Slice(
        throughput=throughput,
        rates=rates,
        latency_ms=latency,
        service_time_ms=distribution(sub.hist["service"]),
        ttfb_ms=distribution(ttfb) if ttfb.count else None,
        errors=errors,
        achieved_rate=sub.achieved_rate() if open_loop else None,
        offered_rate=sub.offered_rate(),
        completed_rate=sub.completed_rate(),
        saturated=steady.saturation(sub, open_loop, rules),
        extra=extra,
        validity=Validity(valid=not reasons, reasons=reasons),
    )


def _precision(rec: Recording, cfg) -> Precision:
    """The latency percentiles' confidence intervals (every trial), and with
    duration_s=auto, the goal, what ended the phase and whether the goal was reached."""
    goal = cfg.precision.goal()
    hist = rec.hist["latency"]
    out = {}
    for name, q in PERCENTILES.items():
        iv = precision.interval(hist, q, goal.confidence)
        ms = [None if v is None else v / 1e6 for v in (iv.estimate, iv.low, iv.high)]
        if hist.count < MIN_SAMPLES[name]:
            ms[0] = None  # as the reported percentile: too few samples to exist
        out[name] = PercentileInterval(
            estimate_ms=ms[0], ci_low_ms=ms[1], ci_high_ms=ms[2], rel_half_width=iv.rel_half_width
        )
    p = Precision(
        auto=cfg.duration_s == "auto",
        confidence=goal.confidence,
        measured_s=rec.window_s(),
        samples=hist.count,
        percentiles=out,
    )
    if p.auto and rec.stop_by is not None:
        p.rel, p.judged = goal.rel, [name for name, _ in goal.percentiles]
        for name in p.judged:
            out[name].rel_half_width_at_stop = rec.stop_widths.get(name)
        p.reached = all(
            (w := rec.stop_widths.get(name)) is not None and w <= goal.rel for name in p.judged
        )
        p.stopped_by, p.samples_at_stop = rec.stop_by, rec.stop_samples
    return p


def precision_problem(p) -> str | None:
    """The validity reason of a duration_s=auto trial that did not reach its precision."""
    if p is None or not p.auto or p.reached is not False:
        return None
    short = []
    for name in p.judged:
        w = p.percentiles[name].rel_half_width_at_stop
        if w is None:
            short.append(f"{name} has no finite interval yet")
        elif w > p.rel:
            short.append(f"{name} ±{w:.1%}")
    return (
        f"precision not reached by max_s ({p.measured_s:.0f} s, "
        f"{p.samples_at_stop} samples): "
        f"{', '.join(short)}; goal ±{p.rel:.1%} at {p.confidence:.0%} confidence"
    )


def _monitor_summary(samples, window) -> dict[str, dict[str, float]]:
    from benchflow.results.monitor import Monitor

    return Monitor.summarize(samples, *window)


def too_few_samples(n: int) -> str | None:
    """Why ``n`` successful requests cannot give a p99 (None: they can)."""
    if n < MIN_SAMPLES["p99"]:
        return f"only {n} successful requests; p99 needs at least {MIN_SAMPLES['p99']}"
    return None


def clock_problem(result: TrialResult, rules) -> str | None:
    """Client shards whose clocks, after correction, may disagree by more than the
    measured window tolerates (None: fine, or one client).

    Latencies never cross clocks (each is timed on its shard's clock), so a clock
    error only shifts a shard's windows against the others': the requests near the
    window's edges, a fraction error/window of the sample, are then counted under a
    slightly different load. The default bound keeps that fraction at a tenth of
    the tail mass of p99 (1%): 0.1% of the window.
    """
    err = result.extra.get("clients.clock_error_ms_max")
    window_s = result.load.duration_s
    if err is None or not window_s:
        return None
    limit = getattr(rules, "max_clock_error_ms", None) or 0.001 * window_s * 1000
    if err <= limit:
        return None
    return (
        f"client clocks may disagree by {err:.3g} ms after correction (allowed {limit:.3g} ms, "
        "validity.max_clock_error_ms): the shards' measured windows do not line up"
    )


def judge(
    result: TrialResult,
    rec: Recording,
    rules,
    driver_reasons=(),
    few_samples_invalid: bool = True,
    judge_trend: bool = True,
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
        lost = len(rec.failed_clients) / max(getattr(rec, "clients", 1), 1)
        allowed = getattr(rules, "max_lost_client_share", 0.0)
        if lost > allowed:
            reasons.append(
                f"{len(rec.failed_clients)} client shard(s) failed, {lost:.0%} of the load lost "
                f"(allowed {allowed:.0%}): " + "; ".join(rec.failed_clients)
            )
    if why := clock_problem(result, rules):
        reasons.append(why)
    if why := steady.saturation_reason(load):
        reasons.append(why)
    if judge_trend and getattr(load, "trend", None) is not None:
        reasons += steady.trend_problems(load.trend, rules)
    if why := precision_problem(getattr(load, "precision", None)):
        reasons.append(why)
    return Validity(valid=not reasons, reasons=reasons)
