"""How the two sides of a row were run, and what that does to the statistics.

Pure numbers, used by :mod:`.statistics`; the method is documented in
docs/statistics.md.

- :func:`design_of`: **paired** when the sides' trials overlap in time (an
  interleaved or random sweep, or two sweeps run at once), **blocked** when they
  were run apart, **independent** when the runs carry no times (synthetic
  samples, the report's side-by-side table);
- :func:`pair_by_time`: which baseline run goes with which candidate run (the
  nearest in time, one to one, the same repetition on a tie);
- :func:`trend_drift`: from the within-side trend over time, how much drift may
  separate two blocks (the between-block variance of their difference);
- :func:`mde`: the minimal detectable effect of a comparison.
"""

from __future__ import annotations

import math

import numpy as np

PAIRED, BLOCKED, INDEPENDENT = "paired", "blocked", "independent"
POWER = 0.8  # of the minimal detectable effect
# The sides overlap enough to be paired when the overlap of their time spans is at least
# this share of the shorter span: a few trials of one sweep that happened to run while
# the other began do not make two blocks paired.
MIN_OVERLAP = 0.5


def span(starts: np.ndarray, ends: np.ndarray) -> tuple[float, float]:
    return float(np.min(starts)), float(np.max(ends))


def design_of(
    b_starts: np.ndarray | None,
    b_ends: np.ndarray | None,
    c_starts: np.ndarray | None,
    c_ends: np.ndarray | None,
) -> str:
    """``paired`` when the two sides overlap in time, ``blocked`` when they do not,
    ``independent`` when either side has no times."""
    if b_starts is None or c_starts is None or len(b_starts) == 0 or len(c_starts) == 0:
        return INDEPENDENT
    b0, b1 = span(b_starts, b_ends)
    c0, c1 = span(c_starts, c_ends)
    overlap = min(b1, c1) - max(b0, c0)
    shorter = min(b1 - b0, c1 - c0)
    if overlap <= 0:
        return BLOCKED
    return PAIRED if overlap >= MIN_OVERLAP * shorter else BLOCKED


def pair_by_time(
    b_times: np.ndarray,
    c_times: np.ndarray,
    b_reps: np.ndarray | None = None,
    c_reps: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """One-to-one pairs (baseline index, candidate index), ``min(nb, nc)`` of them,
    minimising the total time between the members of a pair (an optimal assignment,
    so an interleaved sweep pairs each trial with its neighbour); on a tie the same
    repetition (which ran with the same derived seed) is preferred. Sorted by time."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(b_times[:, None] - c_times[None, :])
    if b_reps is not None and c_reps is not None:
        # a millisecond: breaks ties (blocked sides, equal gaps) without overriding time
        cost = cost + 1e-3 * (b_reps[:, None] != c_reps[None, :])
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(i), int(j)) for i, j in zip(rows, cols, strict=True)]
    return sorted(pairs, key=lambda p: min(b_times[p[0]], c_times[p[1]]))


def trend_drift(
    b_t: np.ndarray, b_y: np.ndarray, c_t: np.ndarray, c_y: np.ndarray
) -> tuple[float, float] | None:
    """The drift that may separate two blocks, from the trend within them.

    Fits one slope over time to both sides, each with its own level (the within-side
    regression: a difference between the sides does not enter the slope). If the
    level moves at that rate, the blocks' means are apart by ``slope × Δt`` (Δt: the
    time between the blocks' centres) whatever the sides' difference. Returns
    ``(variance, slope)``: the variance added to the difference of the sides,
    ``max(0, slope² − SE(slope)²) × Δt²`` (an unbiased estimate of ``slope² Δt²``,
    zero when the slope is within its noise), and the slope. ``None`` without
    enough runs (two per side and a residual degree of freedom) or time spread.
    """
    if len(b_y) < 2 or len(c_y) < 2 or len(b_y) + len(c_y) < 4:
        return None
    tb, tc = b_t - b_t.mean(), c_t - c_t.mean()
    sxx = float(tb @ tb + tc @ tc)
    if sxx <= 0:
        return None
    yb, yc = b_y - b_y.mean(), c_y - c_y.mean()
    slope = float(tb @ yb + tc @ yc) / sxx
    resid = np.concatenate([yb - slope * tb, yc - slope * tc])
    dof = len(resid) - 3
    if dof < 1:
        return None
    se2 = float(resid @ resid) / dof / sxx
    dt = abs(float(c_t.mean() - b_t.mean()))
    return max(0.0, slope**2 - se2) * dt**2, slope


def t_quantile(p: float, dof: float) -> float:
    from scipy import stats

    if dof < 1:
        return math.inf
    return float(stats.norm.ppf(p)) if math.isinf(dof) else float(stats.t.ppf(p, dof))


def mde(se: float, dof: float, alpha: float, power: float = POWER) -> float:
    """The smallest true difference (in the units of ``se``) a two-sided test at
    ``alpha`` finds with probability ``power``: ``(t₁₋α/₂ + t_power) × SE``."""
    if not math.isfinite(se):
        return math.inf
    return (t_quantile(1 - alpha / 2, dof) + t_quantile(power, dof)) * se


def relative(log_effect: float) -> float:
    """A log-ratio effect as a relative change (the larger of up and down)."""
    if not math.isfinite(log_effect):
        return math.inf
    return math.expm1(abs(log_effect))


def mde_paired(pair_sd: float, n: int, alpha: float) -> float:
    """Relative MDE of a paired comparison of n pairs with log-ratio SD ``pair_sd``."""
    if n < 2:
        return math.inf
    return relative(mde(pair_sd / math.sqrt(n), n - 1, alpha))


def mde_blocked(noise_sd: float, drift_sd: float, n: int, alpha: float) -> float:
    """Relative MDE of two blocks of n runs each: run-to-run SD ``noise_sd`` and a
    level that wanders by ``drift_sd`` between blocks (log scale)."""
    if n < 2:
        return math.inf
    v = noise_sd**2 / n  # the variance of one block's mean from run-to-run noise
    se = math.sqrt(2 * v + 2 * drift_sd**2)
    # Welch–Satterthwaite, the drift term known (from a calibration)
    dof = (se**4 / (2 * v**2 / (n - 1))) if v > 0 else math.inf
    return relative(mde(se, dof, alpha))
