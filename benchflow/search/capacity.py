"""The capacity search: bracket, then interpolate, until the bracket is within tolerance.

The search walks one load axis ``x`` (a rate, or a concurrency when ``integer``)
and asks ``decide(x)`` whether the SLOs hold there (:class:`Point`: a verdict and
the binding SLO's margin). It keeps the highest passing ``x`` (``lo``) and the
lowest failing one (``hi``):

1. *bracket*: from ``start``, multiply by ``growth`` while the SLOs hold, until
   one breaks, ``limit`` is reached or the generator cannot keep the rate (then
   the answer is a lower bound, and says so); when ``start`` itself breaks,
   divide by ``growth`` until one holds;
2. *refine*: interpolate the binding margin over the probes so far with a
   monotone cubic (PCHIP, as ``vllm bench sweep serve_sla`` does), find where it
   crosses zero (``r``), and probe just inside the tolerance on the side of the
   bracket that is still wide — ``r·(1 − 0.45·tol)`` to move ``lo`` up,
   ``r·(1 + 0.45·tol)`` to move ``hi`` down — so two good predictions close the
   bracket; a probe always lands in the bracket's inner 80% (each one shrinks
   it), and without a usable interpolation the search bisects;
3. *stop* when ``(hi − lo) / lo <= tolerance`` (for a concurrency: or
   ``hi − lo <= 1``), or when ``budget()`` says no trial is left — but first, when
   the failure at ``hi`` rests on one trial and its figure jumps from ``lo``'s by
   more than :data:`JUMP` (a factor 1.65) across a bracket that narrow, *confirm*
   it: ``confirm(hi)`` measures it again (more trials, pooled); confirmed, the
   bracket stands; passed, ``hi`` becomes the new ``lo`` and the search goes on
   above it. A disturbed trial (a stall of the host) fails a probe; it never
   passes one.

The answer is ``lo`` with the interval ``[lo, hi]``. Pure: no trial runs here
(:mod:`benchflow.search.runner` supplies ``decide``), so it is tested on a
formula as well as on real servers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Bound = Literal["exact", "lower", "upper", "none"]

# refining: aim this fraction of the tolerance either side of the predicted crossing
AIM = 0.45
# and never closer to the bracket's ends than this fraction of its width
INNER = 0.10
# bracketing downwards stops after this many divisions of the start
MAX_DOWN = 6
# a failure whose binding margin lies this far (log ratio: x1.65) below the pass at the
# other end of a closed bracket, on one trial, is measured again before it is believed
JUMP = 0.5


@dataclass
class Point:
    """What ``decide(x)`` found: passed or not, the binding margin (log ratio, > 0
    within the SLO; -inf when the probe had no usable figure), and whether the
    generator (not the SUT) fell short of the rate."""

    x: float
    passed: bool
    margin: float = math.nan
    generator_limited: bool = False
    phase: str = ""
    trials: int = 1  # the trials the verdict rests on (repeats pooled)
    confirmed: bool = False  # measured again by ``confirm``


@dataclass
class Answer:
    value: float | None  # the highest x that met every SLO (None: none did)
    ci_low: float | None  # the bracket: highest passing x ...
    ci_high: float | None  # ... and lowest failing x (None: none failed)
    bound: Bound  # exact: a bracket; lower: the SUT may take more; upper: below everything
    note: str
    points: list[Point] = field(default_factory=list)

    @property
    def width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / self.ci_low


def within(lo: float, hi: float, tolerance: float, integer: bool) -> bool:
    if integer and hi - lo <= 1:
        return True
    return (hi - lo) / lo <= tolerance


def crossing(points: list[Point], lo: float, hi: float) -> float | None:
    """Where the binding margin, interpolated by PCHIP over the probes, crosses zero
    inside ``(lo, hi)`` (None: too few usable probes, or no sign change there)."""
    usable = {}
    for p in points:
        if math.isfinite(p.margin):
            usable[p.x] = p.margin  # a point probed again: its latest (pooled) figure
    xs = sorted(usable)
    if lo not in usable or hi not in usable or len(xs) < 2:
        return None
    m_lo, m_hi = usable[lo], usable[hi]
    if not (m_lo > 0 > m_hi):
        return None
    from scipy.interpolate import PchipInterpolator
    from scipy.optimize import brentq

    f = PchipInterpolator(xs, [usable[x] for x in xs], extrapolate=False)
    try:
        return float(brentq(lambda x: float(f(x)), lo, hi, xtol=1e-9 * hi))
    except ValueError:
        return None


def next_x(points: list[Point], lo: float, hi: float, tolerance: float, integer: bool) -> float:
    """The next probe inside the bracket (see the module's docstring)."""
    w = hi - lo
    r = crossing(points, lo, hi)
    if r is None:
        x = math.sqrt(lo * hi) if hi / lo > 2 else (lo + hi) / 2
    else:
        up, down = r * (1 - AIM * tolerance), r * (1 + AIM * tolerance)
        if lo < up:
            x = up
        elif hi > down:
            x = down
        else:
            x = (lo + hi) / 2
    x = min(max(x, lo + INNER * w), hi - INNER * w)
    if integer:
        x = float(min(max(round(x), int(lo) + 1), int(hi) - 1))
    return x


def search(
    decide: Callable[[float, str], Point],
    start: float,
    growth: float,
    tolerance: float,
    budget: Callable[[], int],
    limit: float | None = None,
    integer: bool = False,
    floor: float | None = None,
    confirm: Callable[[float], Point] | None = None,
) -> Answer:
    """Run the search (module docstring); ``budget()``: trials left (a probe near the
    SLO may take several). ``floor``: the smallest x worth probing (1 for a concurrency).
    ``confirm(x)``: measure ``x`` again (more trials, pooled) — a lone failure that closes
    the bracket with an implausible jump is confirmed before it is believed."""
    points: list[Point] = []
    lo: float | None = None
    hi: float | None = None

    def probe(x: float, phase: str) -> Point:
        p = decide(x, phase)  # p.x: what was probed (the caller may round x)
        p.phase = p.phase or phase
        points.append(p)
        return p

    def rounded(x: float) -> float:
        return float(max(1, round(x))) if integer else x

    def generator(x: float, lo: float | None, hi: float | None) -> Answer:
        base = 0 if lo is None else lo
        return Answer(
            lo,
            lo,
            None,
            "lower",
            f"the load generator could not keep {x:g}; the SUT may take more than {base:g} "
            "(a lower bound)",
            points,
        )

    floor = floor if floor is not None else (1.0 if integer else 0.0)
    x = rounded(min(start, limit) if limit else start)
    while True:
        # 1. bracket upwards (again, when a confirmed pass reopened the bracket)
        while hi is None and budget() > 0:
            p = probe(x, "bracket")
            x = p.x
            if p.generator_limited:
                return generator(x, lo, hi)
            if not p.passed:
                hi = x
                break
            lo = x
            if limit is not None and x >= limit:
                return Answer(
                    lo, lo, None, "lower", f"every SLO held up to search.limit={limit:g}", points
                )
            nxt = rounded(x * growth)
            x = min(nxt, limit) if limit is not None else nxt
        if hi is None:
            note = "search.max_trials spent before any SLO broke"
            return Answer(lo, lo, None, "lower", note, points)
        # 1b. the start already broke an SLO: bracket downwards
        down = 0
        while lo is None and budget() > 0 and down < MAX_DOWN:
            x = rounded(hi / growth)
            if x >= hi or x < floor:
                break
            p = probe(x, "bracket")
            x = p.x
            down += 1
            if p.passed and not p.generator_limited:
                lo = x
            else:
                hi = x
        if lo is None:
            note = f"an SLO was broken at every load tried, down to {hi:g}"
            return Answer(None, None, hi, "upper", note, points)
        # 2. refine
        while not within(lo, hi, tolerance, integer) and budget() > 0:
            x = next_x(points, lo, hi, tolerance, integer)
            p = probe(x, "refine")
            x = p.x
            if p.generator_limited:
                return generator(x, lo, hi)
            if p.passed:
                lo = x
            else:
                hi = x
        # 3. a lone failure closing the bracket with an implausible jump: confirmed first
        if confirm is None or budget() <= 0 or not _doubtful(points, lo, hi):
            break
        p = confirm(hi)
        p.phase = p.phase or "confirm"
        points.append(p)
        if not p.passed:
            continue  # confirmed: the bracket stands (the loop ends, or refines on)
        lo = hi
        above = [q.x for q in points if q.x > lo and not q.passed]
        hi = min(above) if above else None
        x = rounded(lo * growth) if hi is None else x
        if limit is not None and hi is None:
            x = min(x, limit)
    done = within(lo, hi, tolerance, integer)
    note = (
        f"bracket [{lo:g}, {hi:g}] within tolerance {tolerance:g}"
        if done
        else f"search.max_trials spent: bracket [{lo:g}, {hi:g}] wider than the tolerance"
    )
    return Answer(lo, lo, hi, "exact", note, points)


def _doubtful(points: list[Point], lo: float, hi: float) -> bool:
    """Whether the failure at ``hi`` rests on one trial whose figure jumps from the pass
    at ``lo`` by more than :data:`JUMP` (log ratio): more like a disturbance of that
    trial (a stall of the host, another process) than the SUT's own curve."""
    p_hi = next((p for p in reversed(points) if p.x == hi), None)
    p_lo = next((p for p in reversed(points) if p.x == lo), None)
    if p_hi is None or p_lo is None or p_hi.trials > 1 or p_hi.confirmed:
        return False
    if not math.isfinite(p_lo.margin):
        return False
    return not math.isfinite(p_hi.margin) or p_lo.margin - p_hi.margin > JUMP
