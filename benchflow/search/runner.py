"""A search from its Hydra job: ``python -m benchflow search=capacity|saturation ...``.

Validates the config, opens the parent run (:mod:`.answer`), runs the probes
(:mod:`.probes`) as the capacity search (:mod:`.capacity`) or the saturation
sweep (:mod:`.saturation`) asks, judges each against the SLOs (:mod:`.slo`),
then writes and logs the answer and its curve and prints them. Exit status: 0
with an answer; 1 when a probe failed to run (the first one: nothing is known,
the search stops) or no probe met the SLOs; 2 on a bad config.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchflow.config import EXIT_CONFIG, ConfigError, TrialSpec, validate
from benchflow.search.answer import Parent
from benchflow.search.capacity import Answer, Point, search
from benchflow.search.probes import Load, Prober, ProbeTrial, nice
from benchflow.search.slo import Judgement, judge, pool

log = logging.getLogger("benchflow.search")


class ProbeFailed(RuntimeError):
    """The first probe could not run: nothing can be said about the SUT."""


@dataclass
class Session:
    """One search under way: its prober, SLOs and the points measured so far."""

    spec: TrialSpec
    prober: Prober
    points: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False
    _trials: dict[Load, list[ProbeTrial]] = field(default_factory=dict)

    @property
    def budget_left(self) -> int:
        return self.spec.cfg.search.max_trials - self.prober.spent

    def measure(
        self, load: Load, phase: str, repeats: int | None = None, again: bool = False
    ) -> tuple[Judgement, dict]:
        """Probe ``load`` (repeating while undecided), judge it, record the point.
        ``again``: measure it once more, on top of its trials so far — up to ``repeats``
        trials in all (at least one more), judged only at the end."""
        s = self.spec.cfg.search
        slos = s.slos()
        repeats = s.repeats if repeats is None else repeats
        trials: list[ProbeTrial] = list(self._trials.get(load, [])) if again else []
        first = len(trials)
        last = max(repeats, first + 1) - 1
        j = Judgement("fail")
        for k in range(first, last + 1):
            if k > first and self.budget_left <= 0:
                break
            t = self.prober.run(load, k)
            trials.append(t)
            if t.status != "finished" or t.data is None:
                self.failed = True
                if self.prober.spent == 1:
                    raise ProbeFailed(f"probe {load.label} failed: {t.error}")
                j = Judgement("fail", broken=[f"trial failed: {t.error}"])
                break
            final = k == last or self.budget_left <= 0
            if again and not final:
                continue
            j = judge(
                slos,
                [x.data for x in trials if x.data is not None],
                s.confidence,
                final,
                self.spec.cfg.validity.max_rate_shortfall,
                near=s.near,
                min_trials=min(2, repeats),
            )
            if j.verdict != "undecided":
                break
        self._trials[load] = trials
        point = self._point(load, phase, trials, j)
        if again:  # the pooled point replaces the one it measured again
            self.points = [
                p for p in self.points if not (p["over"] == load.over and p["x"] == load.x)
            ]
        self.points.append(point)
        _print_point(point, len(self.points))
        return j, point

    def _point(self, load: Load, phase: str, trials: list[ProbeTrial], j: Judgement) -> dict:
        ok = [t.data for t in trials if t.data is not None]
        m = pool(ok).metrics if ok else {}
        ld, lat = m.get("load") or {}, m.get("latency_ms") or {}
        b = j.binding
        return {
            "phase": phase,
            "over": load.over,
            "x": load.x,
            "verdict": j.verdict,
            "reasons": j.reasons,
            "notes": j.notes,  # validity reasons that did not break the SLOs
            "generator_limited": j.generator_limited,
            "binding_slo": b.slo if b is not None else None,
            "margin": None if not math.isfinite(j.margin) else j.margin,
            "offered_rate": _first(ld.get("offered_rate"), ld.get("target_rate")),
            "throughput": _first(
                ld.get("completed_rate"),
                (m.get("rates") or {}).get("requests_per_s"),
                (m.get("throughput") or {}).get("value"),
            ),
            "latency_ms.p50": lat.get("p50"),
            "latency_ms.p99": lat.get("p99"),
            "errors.rate": (m.get("errors") or {}).get("rate"),
            "slo": [r.as_dict() for r in j.readings],
            "trials": [t.as_dict() for t in trials],
        }


def _first(*values):
    return next((v for v in values if v is not None), None)


def _print_point(p: dict, n: int) -> None:
    thr = p.get("throughput")
    p99 = p.get("latency_ms.p99")
    parts = [
        f"probe {n}: {p['over']}={p['x']:g}",
        f"{thr:.4g} req/s" if thr is not None else "",
        f"p99 {p99:.4g} ms" if p99 is not None else "",
        p["verdict"].upper(),
    ]
    reused = sum(bool(t["reused"]) for t in p["trials"])
    if len(p["trials"]) > 1:
        parts.append(f"({len(p['trials'])} trials pooled)")
    if reused:
        parts.append(f"({reused} reused from MLflow)")
    line = "  ".join(x for x in parts if x)
    if p["reasons"]:
        line += "\n    " + "; ".join(p["reasons"])[:400]
    print(line, flush=True)


# -- the capacity search --------------------------------------------------------------
def _capacity(sess: Session) -> tuple[Answer, dict[str, Any]]:
    s = sess.spec.cfg.search
    over = s.over
    extra: dict[str, Any] = {}
    start = s.start
    if start is None and over == "rate":
        # the synchronous probe: one request at a time; half its throughput starts the search
        j, p = sess.measure(Load("concurrency", 1), "synchronous")
        extra["sync_throughput"] = p.get("throughput")
        if j.verdict == "fail" and not j.broken:
            note = "the SLOs are broken even at one request at a time (concurrency 1)"
            return Answer(None, None, None, "upper", note), extra
        start = max((p.get("throughput") or 2.0) / 2, 0.1)
    elif start is None:
        start = 1.0

    def decide(x: float, phase: str, again: bool = False) -> Point:
        load = Load(over, nice(x, over))
        j, p = sess.measure(load, phase, again=again)
        ok = j.verdict == "pass"
        n = len(p["trials"])
        return Point(load.x, ok, j.margin, j.generator_limited, phase, n, confirmed=again)

    answer = search(
        decide,
        nice(start, over),
        s.growth,
        s.tolerance,
        lambda: sess.budget_left,
        limit=s.limit,
        integer=over == "concurrency",
        confirm=(lambda x: decide(x, "confirm", again=True)) if s.repeats > 1 else None,
    )
    return answer, extra


# -- the saturation sweep ---------------------------------------------------------------
def _saturation(sess: Session) -> tuple[Answer, dict[str, Any]]:
    from benchflow.search.saturation import rates_between, slo_answer

    s = sess.spec.cfg.search
    _, sync = sess.measure(Load("concurrency", 1), "synchronous", repeats=1)
    _, top = sess.measure(Load("concurrency", s.saturation_concurrency), "throughput", repeats=1)
    lo, hi = sync.get("throughput") or 0.0, top.get("throughput") or 0.0
    for r in rates_between(lo, hi, s.points):
        sess.measure(Load("rate", nice(r, "rate")), "sweep", repeats=s.repeats)
    thr = [p["throughput"] for p in sess.points if p.get("throughput") is not None]
    extra = {"sync_throughput": lo, "max_throughput": max(thr) if thr else None}
    if not s.slo:
        return Answer(
            None, None, None, "none", f"maximum throughput {extra['max_throughput']}"
        ), extra
    return slo_answer([p for p in sess.points if p["over"] == "rate"]), extra


# -- entry ---------------------------------------------------------------------------
def _slurm_overrides(hc) -> list[str] | None:
    """The launcher overrides a probe job needs, when this search is meant for Slurm."""
    from benchflow.sweeps.slurm.plan import SLURM_LAUNCHER

    target = str(OmegaConf.select(hc, "launcher._target_") or "")
    if target != SLURM_LAUNCHER:
        return None
    return [
        o
        for o in hc.overrides.hydra
        if o.split("=", 1)[0].lstrip("+~").startswith(("hydra/launcher", "hydra.launcher."))
    ]


def _config_dir(hc) -> str | None:
    """The ``--config-dir`` this search was started with (its probes need it too)."""
    for src in hc.runtime.config_sources:
        if src.provider == "command-line" and src.schema == "file":
            return str(src.path)
    return None


def check_slurm_budget(
    task_overrides: list[str], slurm: list[str], trials: int, config_dir: str | None = None
) -> None:
    """The plan/budget gate of a Slurm search: ``trials`` probes of its request."""
    from benchflow.sweeps.slurm.plan import Plan, check_budget, make_plan

    base = [o for o in task_overrides if not o.split("=", 1)[0].lstrip("+~").startswith("search")]
    plan = make_plan([*base, "search=none", *slurm], True, config_dir)
    job = plan.jobs[0]
    check_budget(Plan([job] * trials, plan.launcher, plan.site))


def run_search(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra job of a search; returns the curve (answer included)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    task = list(OmegaConf.to_container(hc.overrides.task))
    try:
        spec = validate(cfg, tuple(task))
        slurm = _slurm_overrides(hc)
        config_dir = _config_dir(hc)
        if slurm is not None:
            check_slurm_budget(task, slurm, spec.cfg.search.probe_count, config_dir)
    except ConfigError as exc:
        print(f"benchflow: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    s = spec.cfg.search
    search_dir = Path(hc.runtime.output_dir)
    outer = None
    if hc.mode == RunMode.MULTIRUN:
        from benchflow.sweeps.manifest import read_manifest

        search_id = f"{Path(hc.sweep.dir).name}-{hc.job.num}"
        outer = (read_manifest(hc.sweep.dir) or {}).get("parent_run_id")
    else:
        search_id = search_dir.name
    t0 = time.perf_counter()
    parent = Parent(spec, search_id, search_dir, task, outer)
    prober = Prober(
        cfg,
        spec,
        task,
        search_id,
        search_dir,
        parent.run_id,
        parent.tracking_uri,
        parent.started_at,
        slurm,
        config_dir,
    )
    sess = Session(spec, prober)
    what = f"{s.kind} search of {spec.service.name}"
    if s.slo:
        what += " for " + ", ".join(s.slo)
    print(f"{what} ({'on Slurm' if slurm is not None else 'here'}): id {search_id}", flush=True)
    try:
        answer, extra = _capacity(sess) if s.kind == "capacity" else _saturation(sess)
    except ProbeFailed as exc:
        answer, extra = Answer(None, None, None, "none", str(exc)), {}
    except BaseException as exc:  # a probe's config refused, Ctrl-C: the parent says so
        why = f"stopped: {type(exc).__name__}: {exc}"
        curve = make_curve(spec, sess, Answer(None, None, None, "none", why), {}, 0.0)
        parent.finish(curve, failed=True)
        if isinstance(exc, ConfigError):
            print(f"benchflow: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG) from None
        raise
    curve = make_curve(spec, sess, answer, extra, time.perf_counter() - t0)
    # a capacity search fails without an answer (a probe that failed to run counted as
    # broken on the way); a saturation sweep, as any sweep, when a trial failed
    failed = answer.value is None if s.kind == "capacity" else sess.failed
    parent.finish(curve, failed)
    _print_answer(spec, curve, parent)
    if failed:
        raise SystemExit(1)
    return curve


def _point_at(points: list[dict], over: str, x: float | None) -> dict | None:
    for p in reversed(points):
        if x is not None and p["over"] == over and p["x"] == x:
            return p
    return None


def make_curve(
    spec: TrialSpec, sess: Session, answer: Answer, extra: dict, wall_s: float
) -> dict[str, Any]:
    s = spec.cfg.search
    over = s.over if s.kind == "capacity" else "rate"
    at = _point_at(sess.points, over, answer.value)
    high = _point_at(sess.points, over, answer.ci_high)
    trials = sess.prober.trials
    binding = None
    if at is not None:
        binding = at.get("binding_slo")
    elif high is not None:
        binding = high.get("binding_slo")
    return {
        "kind": s.kind,
        "over": over,
        "service": spec.service.name,
        "subject": spec.cfg.target or spec.service.name,
        "slo": list(s.slo),
        "slo_specs": [
            {"text": x.text, "metric": x.metric, "upper": x.upper, "stat": x.stat, "value": x.value}
            for x in s.slos()
        ],
        "binding_slo": binding,
        "answer": {
            "value": answer.value,
            "ci_low": answer.ci_low,
            "ci_high": answer.ci_high,
            "bound": answer.bound,
            "note": answer.note,
            "throughput": (at or {}).get("throughput"),
            "throughput_high": (high or {}).get("throughput"),
        },
        **extra,
        "cost": {
            "trials": len(trials),
            "trials_new": sum(not t.reused for t in trials),
            "trials_reused": sum(t.reused for t in trials),
            "trial_seconds": sum(t.load_s for t in trials),
            "new_trial_seconds": sum(t.load_s for t in trials if not t.reused),
            "wall_seconds": wall_s,
        },
        "points": sess.points,
    }


def _print_answer(spec: TrialSpec, curve: dict, parent: Parent) -> None:
    ans, cost = curve["answer"], curve["cost"]
    name = spec.service.name
    if curve["kind"] == "saturation":
        print(
            f"{name}: maximum throughput {curve.get('max_throughput') or 0:.4g} req/s "
            f"(synchronous {curve.get('sync_throughput') or 0:.4g} req/s)"
        )
    if ans["value"] is not None:
        unit = "req/s" if curve["over"] == "rate" else "in flight"
        hi = ans["ci_high"]
        interval = f"[{ans['ci_low']:g}, {hi:g}]" if hi is not None else f">= {ans['ci_low']:g}"
        bound = " (a lower bound)" if ans["bound"] == "lower" else ""
        binding = f"; binding SLO {curve['binding_slo']}" if curve.get("binding_slo") else ""
        print(
            f"{name}: capacity {ans['value']:g} {unit} {interval}{bound}{binding}\n  {ans['note']}"
        )
    elif curve["kind"] == "capacity":
        print(f"{name}: no capacity found: {ans['note']}")
    print(
        f"  {cost['trials']} probe trials ({cost['trials_reused']} reused), "
        f"{cost['trial_seconds']:.0f} s of load, {cost['wall_seconds']:.0f} s in all"
    )
    print(f"  curve: {parent.search_dir / 'curve.png'}")
    c = spec.cfg
    if c.tracking.upload and parent.run_id:
        from benchflow.tracking.client import ui_hint

        print(f"  parent run {parent.run_id} (benchflow report {parent.search_id})")
        print(ui_hint(c.tracking.uri))
