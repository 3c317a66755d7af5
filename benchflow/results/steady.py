"""Is the measured window a steady state? Trends of the 1-second series and the
saturation of an open-loop SUT (docs/metrics.md#steady-state-and-saturation).

- **Trend** (fio's steady-state slope, guidellm's over-saturation slope): a
  least-squares line through a per-second figure y_s (s = 0..n−1, the whole
  seconds of the window); its *change over the window* is slope × n / mean(y),
  with a 95 % interval from the slope's standard error and Student's t (n − 2
  degrees of freedom). A trend counts when that whole interval lies beyond the
  allowed ``validity.max_*_trend``: noise in a short window is not mistaken for a
  ramp (a steady trial is flagged by chance less than 2.5 % of the time even
  with a change exactly at the limit, and far less often when it has none).
- **Saturation** (open loop, bounded by time): the requests in flight at the end
  of each second (started minus ended so far) stay level when the SUT keeps up
  with the offered rate — Little's law — and grow by (offered − served) per
  second when it does not. The slope of that backlog over the second half of the
  window (the first half may still be filling up to offered rate × latency),
  relative to the offered rate, is the fraction of the offered load the SUT could
  not serve; when its 95 % interval lies above
  ``validity.max_completion_shortfall``, the SUT saturated.
"""

from __future__ import annotations

import math

import numpy as np

from benchflow.load.recorder import Recording

# The fewest whole seconds of a window whose trend is judged.
MIN_TREND_SECONDS = 5
# The fewest completed requests per second, on average, whose trend is judged: below it
# a second's count is mostly Poisson noise, and requests that take seconds (an LLM's
# answer, a QA item) complete in lumps that only look like a ramp.
MIN_TREND_RATE = 10.0


# Student's t 0.975 quantiles where the expansion below is poor (1 to 4 degrees of freedom).
_T975 = {1: 12.706204736174694, 2: 4.302652729749462, 3: 3.182446305283708, 4: 2.776445105197793}


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish–Fisher expansion around the normal: within 0.1 %
    of the exact value from 5 degrees of freedom on; exact below for p = 0.975)."""
    if p == 0.975 and dof in _T975:
        return _T975[dof]
    z = _norm_ppf(p)  # Acklam's rational approximation of the normal quantile
    v = float(dof)
    z2 = z * z
    g1 = z * (z2 + 1) / 4
    g2 = z * (5 * z2 * z2 + 16 * z2 + 3) / 96
    g3 = z * (3 * z2**3 + 19 * z2 * z2 + 17 * z2 - 15) / 384
    return z + g1 / v + g2 / v**2 + g3 / v**3


def _norm_ppf(p: float) -> float:
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690)
    a += (-30.66479806614716, 2.506628277459239)
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972)
    b += (-13.28068155288572,)
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734)
    c += (4.374664141464968, 2.938163982698783)
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    lo = 0.02425
    if p < lo or p > 1 - lo:
        q = math.sqrt(-2 * math.log(p if p < lo else 1 - p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
        return x if p < lo else -x
    q = p - 0.5
    r = q * q
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    return num / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(slope, 95 % half-width of the slope) of the least-squares line; None below 3 points."""
    n = len(x)
    if n < 3:
        return None
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx <= 0:
        return None
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    resid = y - (ym + slope * (x - xm))
    se = math.sqrt(float((resid**2).sum()) / (n - 2) / sxx)
    return slope, t_quantile(0.975, n - 2) * se


def change(values: list[float | None]) -> tuple[float, float] | None:
    """A per-second series' fitted change over its window, relative to its mean, and the
    95 % half-width of that change; None when the window is too short or the mean is 0.
    Seconds without a value (None) are left out of the fit."""
    n = len(values)
    pts = [(s, v) for s, v in enumerate(values) if v is not None]
    if n < MIN_TREND_SECONDS or len(pts) < MIN_TREND_SECONDS:
        return None
    x = np.array([p[0] for p in pts], dtype=np.float64)
    y = np.array([p[1] for p in pts], dtype=np.float64)
    mean = float(y.mean())
    f = fit(x, y)
    if f is None or mean <= 0:
        return None
    return f[0] * n / mean, f[1] * n / mean


def trend(rows: list[dict]) -> dict | None:
    """The trends of throughput (completed requests per second) and p50 latency over the
    whole seconds of the window (``Recording.per_second`` rows); None: too short to judge."""
    if len(rows) < MIN_TREND_SECONDS:
        return None
    if sum(float(r["ok"]) for r in rows) / len(rows) < MIN_TREND_RATE:
        return None
    out: dict = {"seconds": len(rows)}
    for key, series in (
        ("throughput", [float(r["ok"]) for r in rows]),
        ("latency_p50", [r["p50_ms"] for r in rows]),
    ):
        c = change(series)
        out[key], out[f"{key}_ci"] = (None, None) if c is None else c
    return out


def trend_problems(tr, rules) -> list[str]:
    """The reasons a trend makes the window unsteady (``tr``: the result's load.trend)."""
    if tr is None:
        return []
    out = []
    n = tr.seconds
    for key, limit, what in (
        ("throughput", rules.max_throughput_trend, "throughput"),
        ("latency_p50", rules.max_latency_trend, "p50 latency"),
    ):
        c, ci = getattr(tr, key), getattr(tr, f"{key}_ci")
        if c is None or abs(c) - ci <= limit:  # its whole interval must lie beyond the limit
            continue
        rising = c > 0
        if key == "throughput":
            why = "still ramping up" if rising else "degrading"
        else:
            why = "degrading (a queue building up?)" if rising else "still warming up"
        out.append(
            f"{what} {'rose' if rising else 'fell'} {abs(c):.0%} over the {n} s window "
            f"(least-squares fit, ±{ci:.0%} at 95%; allowed ±{limit:.0%}): the SUT was {why}"
        )
    return out


def backlog_growth(rec: Recording, seconds: int) -> tuple[float, float] | None:
    """(slope, 95 % half-width) of the requests in flight at each second's end over the
    second half of the window's ``seconds`` whole seconds; None below 4 seconds."""
    if seconds < 4:
        return None
    started = np.zeros(seconds, np.int64)
    k = min(seconds, len(rec.sec_start))
    started[:k] = rec.sec_start[:k]
    ended = np.zeros(seconds, np.int64)
    k = min(seconds, len(rec.sec_ok))
    ended[:k] = rec.sec_ok[:k] + rec.sec_err[:k]
    backlog = np.cumsum(started) - np.cumsum(ended)
    half = seconds // 2
    x = np.arange(half, seconds, dtype=np.float64)
    return fit(x, backlog[half:].astype(np.float64))


def saturation(rec: Recording, open_loop: bool, rules) -> bool | None:
    """Did the SUT fall behind an open-loop, time-bounded window's offered load? None when
    not judged (closed loop, a count-bounded phase, under 4 whole seconds)."""
    if not open_loop or not rec.window_ns:
        return None
    offered = rec.offered_rate()
    g = backlog_growth(rec, int(rec.window_ns // 1_000_000_000))
    if g is None or not offered:
        return None
    slope, ci = g
    return (slope - ci) / offered > rules.max_completion_shortfall


def saturation_reason(load) -> str | None:
    """The validity reason of a saturated window (``load``: the result's load block)."""
    if not getattr(load, "saturated", None):
        return None
    return (
        f"completed {load.completed_rate or 0:.0f}/s of {load.offered_rate or 0:.0f}/s "
        "offered: the SUT saturated (the requests in flight kept growing over the window)"
    )
