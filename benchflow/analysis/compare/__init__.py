"""Statistics for "is the candidate really better than the baseline?".

Trials of the two sides are paired by *workload* (:func:`benchflow.results.identity.workload_hash`
over their params read by value, ignoring what the targets set). For each matched
configuration and metric the repetitions (one value per run) are compared, in the
way the runs' times allow (:mod:`.design`; docs/statistics.md):

- **paired**, when the sides overlapped in time (an interleaved sweep): each
  baseline run with the candidate run nearest in time; the ratio is the geometric
  mean of the pairs' ratios, its **bootstrap CI** resamples pairs (and, for latency
  percentiles, each run's requests), never narrower than the paired t interval; the
  **paired t-test** on the log-ratios and the **Wilcoxon signed-rank** test;
- **blocked**, when the sides ran apart: the ratio of medians, its bootstrap CI and a
  t-test on the log values, all widened by the **between-block variance** estimated
  from the trend within the sides and from the host's stored calibration
  (:mod:`.calibrations`, ``benchflow calibrate``); without a calibration, no verdict
  below the **minimal detectable effect** computed for an assumed between-block SD;
- **independent** (runs without times): the ratio of medians, a two-level bootstrap
  CI (runs, and a latency percentile's requests drawn exactly from the run's
  histogram as the order statistic ``F⁻¹(U)``, ``U ~ Beta(k, n-k+1)``), **Welch** and
  **Mann–Whitney**.

The chosen test's p-values are adjusted with **Benjamini–Hochberg** across the
table, leaving out rows that do not vary (constant on both sides, or the same in
every pair); a row is *better* or *worse* only when the adjusted p-value is below
alpha, the confidence interval excludes 1 on the same side and the change reaches
the **effect-size floor** (2 %); with fewer than ``min_repetitions`` runs (pairs) it
is *not enough data*. Every row reports its minimal detectable effect (80 % power).

The package holds, bottom to top: the designs (:mod:`.design`), the statistics of one
row (:mod:`.statistics`), the runs of one side read from MLflow (:mod:`.selection`),
stored calibrations (:mod:`.calibrations`), the comparison of two sides
(:mod:`.comparison`) and the promotion policy that gates on it (:mod:`.policy`).
Their public names are offered here:
``from benchflow.analysis.compare import compare_selections, select``.
"""

from __future__ import annotations

from benchflow.analysis.compare.calibrations import Calibration, Calibrations
from benchflow.analysis.compare.comparison import (
    DEFAULT_METRICS,
    Comparison,
    by_value,
    compare_selections,
    default_metrics,
    fmt,
    fmt_ci,
    fmt_design,
    fmt_mde,
    natural_key,
)
from benchflow.analysis.compare.design import BLOCKED, INDEPENDENT, PAIRED
from benchflow.analysis.compare.policy import Decision, Policy, gate, load_policy
from benchflow.analysis.compare.selection import CompareError, RunRecord, Selection, select
from benchflow.analysis.compare.statistics import (
    BETTER,
    NO_DATA,
    SAME,
    WORSE,
    BlockPrior,
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
    "BLOCKED",
    "DEFAULT_METRICS",
    "INDEPENDENT",
    "NO_DATA",
    "PAIRED",
    "SAME",
    "WORSE",
    "BlockPrior",
    "Calibration",
    "Calibrations",
    "CompareError",
    "Comparison",
    "Decision",
    "Policy",
    "Row",
    "RunRecord",
    "Sample",
    "Selection",
    "Settings",
    "by_value",
    "compare_samples",
    "compare_selections",
    "default_metrics",
    "fmt",
    "fmt_ci",
    "fmt_design",
    "fmt_mde",
    "gate",
    "higher_is_better",
    "histogram_of",
    "judge",
    "load_policy",
    "natural_key",
    "select",
]
