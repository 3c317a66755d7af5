"""Limits and isolation (issue: benchmark packages, resource limits): what a worker
process costs, how promptly a limit ends a trial, what an isolated venv costs.

Runs the example package examples/benchflow-intent, installed with pip into
the bench workspace (it sees it on PYTHONPATH only)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import Row, Workspace, check

S = "limits"
ORDER = 60
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "benchflow-intent"


class _Runner:
    """Trials that may fail (a limit is the point), in the workspace, with the example."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        site = ws.dir / "intent-site"
        if not site.exists():
            subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "install", "-q", "--no-deps"),
                    *(["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []),
                    *("--target", str(site), str(EXAMPLE)),
                ],
                check=True,
                capture_output=True,
            )
        self.env = dict(
            ws.env,
            PYTHONPATH=f"{site}:{Path(__file__).resolve().parents[1]}",
            BENCHFLOW_ENVS_DIR=str(ws.dir / "envs"),
            BENCHFLOW_DATA_DIR=str(ws.dir / "data"),
        )
        self.n = 0

    def trial(self, *overrides: str) -> tuple[dict, Path]:
        self.n += 1
        scenario = f"limits{self.n}"
        args = ["-cd", str(EXAMPLE / "conf"), f"scenario={scenario}", "progress=off", *overrides]
        subprocess.run(
            [sys.executable, "-m", "benchflow", *args],
            cwd=self.ws.dir,
            env=self.env,
            capture_output=True,
            timeout=600,
        )
        root = self.ws.dir / "results" / scenario
        (tdir,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")]
        return json.loads((tdir / "meta.json").read_text()), tdir


def how(*overrides: str) -> str:
    return "python -m benchflow -cd examples/benchflow-intent/conf " + " ".join(overrides)


def rows(ws: Workspace) -> list[Row]:
    r = _Runner(ws)
    out: list[Row] = []
    base = ["service=noop", "duration_s=1", "warmup_s=0", "tracking.upload=false"]
    walls = {}
    for label, extra in (("in process", []), ("worker", ["limits.trial.time_s=600"])):
        w = []
        for _ in range(3):
            meta, _ = r.trial(*base, *extra)
            w.append(meta["ended_at_epoch"] - meta["started_at_epoch"])
        walls[label] = statistics.median(w)
    extra_s = walls["worker"] - walls["in process"]
    out.append(
        Row(
            S,
            "trial in a watched worker process: extra wall time (median of 3)",
            extra_s,
            "s",
            "<= 3",
            check(extra_s, "<=", 3.0),
            how(*base, "limits.trial.time_s=600") + "  vs without the limit",
        )
    )

    o = ["service=sleep", "duration_s=30", "warmup_s=0", "limits.trial.time_s=3"]
    meta, _ = r.trial(*o, "tracking.upload=false")
    over = meta["limit"]["observed_s"] - meta["limit"]["limit_s"]
    ended = meta["supervision"]["elapsed_s"] - meta["limit"]["limit_s"]
    out += [
        Row(
            S,
            "time limit 3 s: detected after the limit by",
            over,
            "s",
            "<= 0.3",
            check(over, "<=", 0.3),
            how(*o),
        ),
        Row(
            S,
            "  same: trial and its SUT ended (SIGTERM, teardown) by",
            ended,
            "s",
            "<= 5",
            check(ended, "<=", 5.0),
            how(*o),
        ),
    ]

    o = [
        "service=intent",
        "service.target=benchflow_intent.targets:leaky",
        "++service.target_args.leak_kb=256",
        "service.dataset=generated",
        "service.n_items=1000000",
        "++service.resources.mem_gb=0.2",
        "limits.trial.mem_gb=0.5",
        "warmup_s=0",
    ]
    meta, _ = r.trial(*o, "tracking.upload=false")
    lim = meta["limit"]
    out.append(
        Row(
            S,
            "memory limit 512 MB, leaking ~0.25 MB per request: RSS when ended",
            lim["observed_mb"],
            "MB",
            "<= 640",
            check(lim["observed_mb"], "<=", 640),
            how(*o),
        )
    )

    venv = [
        "service=intent",
        "service.isolation.mode=venv",
        "++service.isolation.system_site_packages=true",
        '++service.isolation.pip_args=["--no-index","--no-deps","--no-build-isolation"]',
        "warmup_s=0",
        "tracking.upload=false",
    ]
    first, _ = r.trial(*venv)
    again, _ = r.trial(*venv)
    out += [
        Row(
            S,
            "isolated venv: first use (create + pip install, offline, --no-deps)",
            first["isolation"]["seconds"],
            "s",
            how=how(*venv),
        ),
        Row(
            S,
            "  same: reused from the cache",
            again["isolation"]["seconds"],
            "s",
            "<= 0.5",
            check(again["isolation"]["seconds"], "<=", 0.5),
            how(*venv),
        ),
    ]
    return out
