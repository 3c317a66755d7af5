"""Listing targets with their versions, aliases and latest results, filtered by
tags and metrics (``benchflow targets list``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from benchflow.registry.lookup import mlflow_client, model_versions, search_models
from benchflow.registry.specs import TargetError


# -- listing -------------------------------------------------------------------------
@dataclass
class TargetSummary:
    name: str
    description: str
    aliases: dict[str, str]
    versions: list[dict[str, Any]]  # version, stage, tags, aliases, created
    benchmarks: dict[str, dict[str, int]]  # scenario/experiment -> {version: runs}


def runs_of(c, labels: list[str] | None = None, name: str | None = None, extra: str = ""):
    """Trial runs recorded for targets (``benchflow.target`` tag), across all experiments.

    ``labels`` are ``NAME/VERSION`` values; ``name`` every version of one target.
    """
    if labels:
        # MLflow's filter grammar has no OR: one search per label.
        return [r for lb in labels for r in _search_all(c, _eq("benchflow.target", lb), extra)]
    if name:
        return _search_all(c, f"tags.`benchflow.target` LIKE '{name}/%'", extra)
    return _search_all(c, "tags.`benchflow.target` LIKE '%/%'", extra)


def _eq(tag: str, value: str) -> str:
    return f"tags.`{tag}` = '{value}'"


def _search_all(c, flt: str, extra: str = "") -> list:
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return []
    if extra:
        flt = f"{flt} AND {extra}"
    out, token = [], None
    while True:
        page = c.search_runs(exps, filter_string=flt, max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def list_targets(
    uri: str | None = None,
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    metric: str | None = None,
    client=None,
) -> list[TargetSummary]:
    """Registered targets with their versions and the benchmarks they have results for.

    ``name`` is a substring (SQL LIKE), ``tags`` filter on the registered model's or
    a version's tags, ``metric`` (e.g. ``throughput > 1000``) keeps targets with at
    least one run satisfying it (an MLflow run filter on ``metrics.``).
    """
    c = client or mlflow_client(uri)
    flt = f"name LIKE '%{name}%'" if name else None
    models = search_models(c, flt)
    metric_filter = _metric_filter(metric) if metric else ""
    out = []
    for rm in sorted(models, key=lambda m: m.name):
        versions = sorted(model_versions(c, rm.name), key=lambda v: int(v.version))
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        if tags and not all(
            (rm.tags or {}).get(k) == v or any((mv.tags or {}).get(k) == v for mv in versions)
            for k, v in tags.items()
        ):
            continue
        runs = runs_of(c, name=rm.name, extra=metric_filter)
        if metric and not runs:
            continue
        bench: dict[str, dict[str, int]] = {}
        for r in runs:
            if "benchflow.trial_id" not in r.data.tags:
                continue
            scen = r.data.tags.get("benchflow.scenario", "?")
            ver = r.data.tags["benchflow.target"].split("/")[-1]
            bench.setdefault(scen, {}).setdefault(ver, 0)
            bench[scen][ver] += 1
        out.append(
            TargetSummary(
                name=rm.name,
                description=rm.description or "",
                aliases=aliases,
                versions=[
                    {
                        "version": str(v.version),
                        "aliases": sorted(a for a, x in aliases.items() if x == str(v.version)),
                        "stage": (v.tags or {}).get("benchflow.stage", "none"),
                        "tags": {
                            k: val
                            for k, val in (v.tags or {}).items()
                            if not k.startswith("benchflow.")
                        },
                        "created": time.strftime(
                            "%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)
                        ),
                        "promotion": (v.tags or {}).get("benchflow.promotion"),
                    }
                    for v in versions
                ],
                benchmarks=bench,
            )
        )
    return out


_METRIC_FILTER = re.compile(r"^\s*([A-Za-z0-9_./\-]+)\s*(<=|>=|!=|=|<|>)\s*(-?[0-9.eE+\-]+)\s*$")


def _metric_filter(expr: str) -> str:
    m = _METRIC_FILTER.match(expr)
    if not m:
        raise TargetError(
            f"--metric {expr!r}: expected NAME OP NUMBER, e.g. 'throughput > 1000' or "
            "'latency_ms.p99 < 5'"
        )
    key, op, num = m.groups()
    return f"metrics.`{key}` {op} {float(num)}"
