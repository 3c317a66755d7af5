"""Promotion of a target version to ``@champion`` on statistical evidence.

The candidate's runs are compared with the current champion's on the same
workloads (:mod:`benchflow.analysis.compare`); the alias moves only when the policy's
primary metric is significantly better and no guard is significantly worse
(:func:`benchflow.analysis.compare.gate`). Accepted or refused, the evidence is kept: a
run in the ``benchflow-targets`` experiment holding the comparison (JSON and
Markdown) and the decision, and tags on the candidate version pointing at it.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchflow import registry, tracking
from benchflow.analysis.compare import (
    Calibrations,
    Comparison,
    Decision,
    Policy,
    Settings,
    compare_selections,
    default_metrics,
    gate,
    load_policy,
    select,
)


@dataclass
class Outcome:
    decision: Decision
    comparison: Comparison | None
    policy: Policy
    baseline_version: str | None
    evidence_run: str


def promote(
    name: str,
    version: str,
    *,
    alias: str = "champion",
    uri: str | None = None,
    settings: Settings | None = None,
    metrics: list[str] | None = None,
    primary: str | None = None,
    guards: tuple[str, ...] | None = None,
    ignore: tuple[str, ...] = (),
    experiment: str | None = None,
    results_dir: str | Path = "results",
) -> Outcome:
    """Compare NAME/VERSION with NAME@ALIAS and move the alias if the evidence says so."""
    c = tracking.client(uri)
    cand_t = registry.resolve(registry.TargetRef(name, version=version), client=c)
    rm = c.get_registered_model(name)
    current = {a: str(v) for a, v in (rm.aliases or {}).items()}.get(alias)
    tags = {**(rm.tags or {}), **cand_t.tags}
    policy = load_policy(cand_t.tags.get("service") or cand_t.spec.service, tags)
    policy = Policy(primary or policy.primary, tuple(guards) if guards else policy.guards)

    cmp = None
    if current is None:
        decision = Decision(True, [f"{name} has no @{alias} yet: first promotion, nothing to beat"])
    elif current == cand_t.version:
        decision = Decision(True, [f"{name}/{version} already is @{alias}"])
    else:
        base = select(f"{name}/{current}", c, experiment)
        cand = select(cand_t.label, c, experiment)
        wanted = metrics or list(
            dict.fromkeys([*default_metrics(base, cand), policy.primary, *policy.guards])
        )
        cmp = compare_selections(
            base, cand, wanted, settings, ignore, Path(results_dir), calibrations=Calibrations(c)
        )
        decision = gate(cmp, policy)

    evidence = _record_evidence(c, cand_t, alias, current, decision, cmp, policy)
    if decision.accepted and current != cand_t.version:
        if current is not None:
            c.set_registered_model_alias(name, registry.PREVIOUS_CHAMPION, current)
            c.set_model_version_tag(name, current, "benchflow.stage", "archived")
        registry.set_alias(name, alias, cand_t.version, client=c)
    return Outcome(decision, cmp, policy, current, evidence)


def _record_evidence(c, cand_t, alias, current, decision, cmp, policy) -> str:
    exp = tracking.ensure_experiment(c, registry.TARGETS_EXPERIMENT)
    verdict = "accepted" if decision.accepted else "refused"
    run = c.create_run(
        exp,
        run_name=f"promote {cand_t.label} to @{alias}: {verdict}",
        tags={
            "benchflow.role": "promotion",
            "benchflow.promoted_target": cand_t.label,
            "benchflow.baseline": f"{cand_t.name}/{current}" if current else "",
            "benchflow.decision": verdict,
        },
    )
    rid = run.info.run_id
    record = {
        "target": cand_t.label,
        "alias": alias,
        "baseline": f"{cand_t.name}/{current}" if current else None,
        "decision": verdict,
        "reasons": decision.reasons,
        "policy": asdict(policy),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = {"decision.json": json.dumps(record, indent=2)}
        if cmp is not None:
            files["comparison.json"] = json.dumps(cmp.to_dict(), indent=2)
            files["comparison.md"] = (
                f"# promote {cand_t.label} to @{alias}: {verdict}\n\n"
                + "".join(f"- {r}\n" for r in decision.reasons)
                + "\n"
                + cmp.to_markdown()
            )
        for fname, text in files.items():
            (Path(tmp) / fname).write_text(text)
            c.log_artifact(rid, str(Path(tmp) / fname), "promotion")
    c.set_terminated(rid, "FINISHED")
    c.set_model_version_tag(
        cand_t.name,
        cand_t.version,
        "benchflow.promotion",
        f"{verdict} for @{alias} vs {record['baseline'] or 'none'} at {record['at']}",
    )
    c.set_model_version_tag(cand_t.name, cand_t.version, "benchflow.promotion_run", rid)
    return rid
