"""Sweeps: the Hydra callback that frames a multirun in MLflow.

Before any trial starts, ``on_multirun_start`` creates the experiment and the
sweep's parent run once (so hundreds of trial processes never race to create
them) and writes ``sweep.json`` into the sweep directory; every trial, in any
process or on any node, reads it and links its run to the parent. At the end,
``on_multirun_end`` collects the trials, prints and logs a summary table, and
makes the multirun exit non-zero if any trial failed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from benchflow import tracking
from benchflow.results import read_json, write_json
from benchflow.secrets import mask, mask_override, redact_tree
from benchflow.sweeps.manifest import (
    MANIFEST,
    RETRIED_FILE,
    TRIALS_FILE,
    read_manifest,
    sweep_id_of,
)

log = logging.getLogger("benchflow.sweep")


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        tr = config.tracking
        manifest = {
            "sweep_id": sweep_id_of(sweep_dir),
            "scenario": config.scenario,
            "experiment": tr.experiment,
            "overrides": [mask_override(o) for o in config.hydra.overrides.task],
            "started_at": time.time(),
            "tracking_uri": None,
            "parent_run_id": None,
        }
        if tr.upload:
            try:
                c = tracking.client(tr.uri, tr.http_timeout_s, tr.http_retries)
                manifest["tracking_uri"] = mask(tracking.resolved_uri(tr.uri), set())
                manifest["parent_run_id"] = tracking.start_sweep(
                    c, tr.experiment, manifest["sweep_id"], config.scenario, manifest["overrides"]
                )
            except Exception as exc:
                log.warning(
                    "MLflow unreachable at sweep start (%s); trials keep their files "
                    "for `benchflow sync`",
                    str(exc).splitlines()[0] if str(exc) else exc,
                )
        write_json(sweep_dir / MANIFEST, manifest)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        scrub_multirun_yaml(sweep_dir)
        manifest = read_manifest(sweep_dir) or {}
        rows = collect(sweep_dir)
        counts = {
            "total": len(rows),
            "finished": sum(r["status"] == "finished" for r in rows),
            "failed": sum(r["status"] != "finished" for r in rows),
            "invalid": sum(r["status"] == "finished" and r["valid"] is False for r in rows),
            "retried": sum(len(p.read_text().split()) for p in sweep_dir.glob(f"*/{RETRIED_FILE}")),
        }
        files = write_summary(sweep_dir, rows)
        print_summary(rows, counts, sweep_dir)
        tr = config.tracking
        print(f"results: {Path(config.results_dir) / config.scenario}/")
        if manifest.get("parent_run_id"):
            try:
                c = tracking.client(tr.uri, tr.http_timeout_s, tr.http_retries)
                # the summary table becomes the parent run's description (rows: masked
                # overrides, figures); the hint links to the experiment's runs table
                exp_id = tracking.finish_sweep(c, manifest["parent_run_id"], files, counts, rows)
                from benchflow.tracking.client import ui_hint

                print(ui_hint(tr.uri, exp_id))
            except Exception as exc:
                log.warning("could not finish the sweep's parent run: %s", exc)
        elif tr.upload:
            print("not in MLflow yet (tracking unreachable): run `benchflow sync` when it is back")
        if counts["failed"]:
            raise SystemExit(1)


def scrub_multirun_yaml(sweep_dir: Path) -> None:
    """Mask secrets in the ``multirun.yaml`` Hydra saves in the sweep directory (the
    composed config and the overrides as given: a URI with a password, a secret key).
    Hydra writes it after :meth:`SweepCallback.on_multirun_start`, so each job and the
    sweep's end call this; it rewrites the file only when something was masked."""
    from omegaconf import OmegaConf

    path = Path(sweep_dir) / "multirun.yaml"
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, ValueError, TypeError) as exc:
        log.debug("no multirun.yaml to scrub at %s (%s)", path, exc)
        return
    clean = redact_tree(saved)
    over = (clean.get("hydra") or {}).get("overrides") or {}
    for k in ("task", "hydra"):
        if isinstance(over.get(k), list):
            over[k] = [mask_override(str(o)) for o in over[k]]
    if clean != saved:
        OmegaConf.save(OmegaConf.create(clean), path)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per trial of the sweep, from the trials' own files."""
    rows = []
    for listing in sorted(
        sweep_dir.glob(f"*/{TRIALS_FILE}"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    ):
        for line in listing.read_text().splitlines():
            tdir = Path(line.strip())
            if not line.strip():
                continue
            try:
                meta = read_json(tdir / "meta.json")
            except (OSError, ValueError):
                rows.append(
                    {
                        "trial": tdir.name,
                        "job": listing.parent.name,
                        "status": "unreadable",
                        "valid": None,
                    }
                )
                continue
            row = {
                "trial": meta["trial_id"][:12],
                "job": listing.parent.name,
                "overrides": " ".join(meta.get("overrides", [])),
                "repetition": meta.get("repetition", 0),
                "status": meta["status"],
                "valid": None,
                "throughput": None,
                "unit": None,
                "p50_ms": None,
                "p99_ms": None,
                "error_rate": None,
                "error": (meta.get("error") or {}).get("class"),
            }
            if meta["status"] == "finished" and (tdir / "metrics.json").exists():
                m = read_json(tdir / "metrics.json")
                row.update(
                    valid=m["validity"]["valid"],
                    throughput=m["throughput"]["value"],
                    unit=m["throughput"]["unit"],
                    p50_ms=m["latency_ms"]["p50"],
                    p99_ms=m["latency_ms"]["p99"],
                    error_rate=m["errors"]["rate"],
                )
            rows.append(row)
    return rows


def write_summary(sweep_dir: Path, rows: list[dict]) -> list[Path]:
    import csv

    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    fields = list(rows[0]) if rows else ["trial"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in fields) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return "" if v is None else str(v)


def print_summary(rows: list[dict], counts: dict[str, int], sweep_dir: Path) -> None:
    """A table of the trials, showing only the overrides that vary between them."""
    from rich.console import Console
    from rich.table import Table

    split = [set((r.get("overrides") or "").split()) for r in rows]
    common = set.intersection(*split) if split else set()
    table = Table(
        title=f"sweep {sweep_dir.name}: {counts['finished']} finished, "
        f"{counts['failed']} failed, {counts['invalid']} invalid"
        + (f", {counts['retried']} attempt(s) retried" if counts.get("retried") else "")
    )
    cols = ("job", "trial", "varies", "status", "valid", "throughput", "unit", "p50_ms", "p99_ms")
    for col in cols:
        table.add_column(col, overflow="fold")
    for r, _ov in zip(rows, split, strict=True):
        r = {
            **r,
            "varies": " ".join(o for o in (r.get("overrides") or "").split() if o not in common),
        }
        if r["status"] != "finished":
            r["status"] = f"{r['status']} ({r.get('error')})"
        table.add_row(*(_fmt(r.get(c)) for c in cols))
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(table)
    console.print(f"summary: {sweep_dir / 'summary.md'}")
