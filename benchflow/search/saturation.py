"""The saturation sweep (guidellm's ``sweep`` profile).

1. *synchronous*: one request at a time (closed loop, concurrency 1) — the
   lowest load, whose throughput is the sweep's lower end;
2. *throughput*: closed loop at ``search.saturation_concurrency`` — as much as
   the SUT completes, the sweep's upper end and its **maximum throughput**;
3. ``search.points`` open-loop rates evenly spaced strictly between the two
   (:func:`rates_between`), Poisson or constant (``search.arrival``).

With SLOs, each point is judged as a capacity probe is, and the answer is the
highest rate below the first that broke one (:func:`slo_answer`) — as coarse as
the sweep's spacing; ``search=capacity`` finds it to a tolerance.
"""

from __future__ import annotations

from typing import Any

from benchflow.search.capacity import Answer


def rates_between(low: float, high: float, points: int) -> list[float]:
    """``points`` rates evenly spaced strictly between ``low`` and ``high``."""
    if points < 1 or high <= 0:
        return []
    if high <= low:  # concurrency does not raise throughput: probe just below it
        low = high / (points + 1)
    step = (high - low) / (points + 1)
    return [low + step * (i + 1) for i in range(points)]


def slo_answer(points: list[dict[str, Any]]) -> Answer:
    """The highest rate meeting the SLOs below the lowest that broke one."""
    pts = sorted(points, key=lambda p: p["x"])
    lo = hi = None
    for p in pts:
        if p["verdict"] == "pass":
            lo = p["x"]
        else:
            hi = p["x"]
            break
    if lo is None:
        return Answer(None, None, hi, "upper", "every rate of the sweep broke an SLO")
    if hi is None:
        return Answer(lo, lo, None, "lower", "every rate of the sweep met the SLOs")
    return Answer(lo, lo, hi, "exact", f"between sweep rates {lo:g} and {hi:g}")
