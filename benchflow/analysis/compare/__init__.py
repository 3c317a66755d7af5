"""Statistics for "is the candidate really better than the baseline?".

Trials of the two sides are paired by *workload* (:func:`benchflow.config.workload_hash`
over their params, ignoring what the targets set). For each matched
configuration and metric the repetitions (one value per run) are compared:

- the point estimate is the **ratio of medians** of the per-run values
  (candidate / baseline);
- its **bootstrap confidence interval** resamples runs with replacement and, for
  latency percentiles, the requests *within* each resampled run as well: a run's
  bootstrapped q-th percentile is drawn exactly from its histogram as the
  k-th order statistic, ``F⁻¹(U)`` with ``U ~ Beta(k, n-k+1)``, ``k = ⌈q·n⌉``, which
  is what resampling its n requests and taking the percentile would give, at no
  cost per request;
- **Welch's t-test** and the **Mann–Whitney U** test on the per-run values, the
  chosen one's p-values adjusted with **Benjamini–Hochberg** across the table;
- an **effect-size floor** (default 2 %): a smaller change is "no significant
  change" even when it is statistically significant.

A row is *better* or *worse* only when the adjusted p-value is below alpha, the
confidence interval excludes 1 on the same side, and the change reaches the
floor; with fewer than ``min_repetitions`` runs on a side it is *not enough
data* (the numbers are shown all the same).

The package holds, bottom to top: the statistics of one row (:mod:`.statistics`),
the runs of one side read from MLflow (:mod:`.selection`), the comparison of two
sides (:mod:`.comparison`) and the promotion policy that gates on it
(:mod:`.policy`). Their public names are offered here:
``from benchflow.analysis.compare import compare_selections, select``.
"""

from __future__ import annotations

from benchflow.analysis.compare.comparison import (
    DEFAULT_METRICS,
    Comparison,
    compare_selections,
    default_metrics,
    fmt,
    fmt_ci,
    natural_key,
)
from benchflow.analysis.compare.policy import Decision, Policy, gate, load_policy
from benchflow.analysis.compare.selection import CompareError, RunRecord, Selection, select
from benchflow.analysis.compare.statistics import (
    BETTER,
    NO_DATA,
    SAME,
    WORSE,
    Row,
    Sample,
    Settings,
    compare_samples,
    higher_is_better,
    histogram_of,
    judge,
)

__all__ = [
    "BETTER",
    "DEFAULT_METRICS",
    "NO_DATA",
    "SAME",
    "WORSE",
    "CompareError",
    "Comparison",
    "Decision",
    "Policy",
    "Row",
    "RunRecord",
    "Sample",
    "Selection",
    "Settings",
    "compare_samples",
    "compare_selections",
    "default_metrics",
    "fmt",
    "fmt_ci",
    "gate",
    "higher_is_better",
    "histogram_of",
    "judge",
    "load_policy",
    "natural_key",
    "select",
]
