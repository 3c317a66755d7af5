"""The promotion policy: which metric must improve and which guards must not get
worse (:class:`Policy`, read by :func:`load_policy` from conf/promotion.yaml and
the target's tags), and the gate that turns a comparison into a
:class:`Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchflow.analysis.compare.comparison import Comparison, fmt
from benchflow.analysis.compare.statistics import BETTER, NO_DATA, WORSE
from benchflow.config import conf_dir


# -- promotion policy ------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    primary: str = "throughput"
    guards: tuple[str, ...] = ("latency_ms.p99", "errors.rate")


def load_policy(
    service: str | None, target_tags: dict[str, str] | None = None, path: Path | None = None
) -> Policy:
    """The promotion policy: conf/promotion.yaml's default, then its per-service entry,
    then the registered target's ``benchflow.primary`` / ``benchflow.guards`` tags."""
    import yaml

    p = path or conf_dir() / "promotion.yaml"
    data = yaml.safe_load(p.read_text()) if p.is_file() else {}
    merged = dict(data.get("default") or {})
    merged.update((data.get("services") or {}).get(service or "", {}) or {})
    tags = target_tags or {}
    if tags.get("benchflow.primary"):
        merged["primary"] = tags["benchflow.primary"]
    if tags.get("benchflow.guards"):
        merged["guards"] = [g.strip() for g in tags["benchflow.guards"].split(",") if g.strip()]
    return Policy(
        primary=merged.get("primary", Policy.primary),
        guards=tuple(merged.get("guards", Policy.guards)),
    )


@dataclass
class Decision:
    accepted: bool
    reasons: list[str]


def gate(cmp: Comparison, policy: Policy) -> Decision:
    """Promote only when the primary metric is significantly better in at least one
    matched configuration and worse in none, and no guard is significantly worse."""
    reasons = []
    prim = cmp.rows_for(policy.primary)
    judged = [r for r in prim if r.verdict != NO_DATA]
    if not prim:
        reasons.append(f"the primary metric {policy.primary} is not in the runs")
    elif not judged:
        reasons.append(f"not enough data on the primary metric {policy.primary}")
    worse_p = [r for r in prim if r.verdict == WORSE]
    if worse_p:
        reasons.append(
            f"{policy.primary} is significantly worse in {len(worse_p)} configuration(s): "
            + "; ".join(f"{r.config} ({r.ratio - 1:+.1%})" for r in worse_p[:5])
        )
    if judged and not any(r.verdict == BETTER for r in prim):
        reasons.append(f"{policy.primary} is not significantly better in any configuration")
    for g in policy.guards:
        bad = [r for r in cmp.rows_for(g) if r.verdict == WORSE]
        if bad:
            reasons.append(
                f"guard {g} is significantly worse in {len(bad)} configuration(s): "
                + "; ".join(f"{r.config} ({fmt(r.ratio)}×)" for r in bad[:5])
            )
    if reasons:
        return Decision(False, reasons)
    better = [r for r in prim if r.verdict == BETTER]
    return Decision(
        True,
        [
            f"{policy.primary} significantly better in {len(better)} of {len(prim)} "
            "configuration(s); "
            f"no guard ({', '.join(policy.guards) or 'none'}) significantly worse"
        ],
    )
