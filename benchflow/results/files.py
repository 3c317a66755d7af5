"""The files a trial leaves on disk (``metrics.json``, ``metrics.csv``,
``timeseries.csv``, ``system.csv``, ``histograms.json``, ...), written before
anything goes to MLflow, and read back by ``sync``, reports and ``compare``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import yaml

from benchflow.load.recorder import Recording
from benchflow.results.build import size_rate
from benchflow.results.monitor import FIELDS, Sample
from benchflow.results.schema import TrialResult, metrics_flat


# -- files ---------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def write_yaml(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def write_result_files(
    trial_dir: Path,
    result: TrialResult,
    rec: Recording,
    samples: list[Sample],
    window_start: float,
    driver_cls,
) -> None:
    write_json(trial_dir / "metrics.json", result.model_dump(mode="json"))
    flat = {
        "trial_id": result.trial_id,
        "timestamp": result.timestamp,
        "service": result.service,
        "scenario": result.scenario,
        **metrics_flat(result),
    }
    write_csv(trial_dir / "metrics.csv", [flat])
    by_size = result.throughput.unit != "requests_per_s"
    rows = []
    for r in rec.per_second():
        rows.append(
            {
                "second": r["second"],
                "throughput": size_rate(r["size"], driver_cls.size_unit)[0] if by_size else r["ok"],
                "requests": r["ok"] + r["errors"],
                "errors": r["errors"],
                "latency_ms.p50": r["p50_ms"],
                "latency_ms.p99": r["p99_ms"],
            }
        )
    write_csv(
        trial_dir / "timeseries.csv",
        rows,
        ["second", "throughput", "requests", "errors", "latency_ms.p50", "latency_ms.p99"],
    )
    write_csv(
        trial_dir / "system.csv",
        [{"t": s.t, "second": s.t - window_start, **s.values} for s in samples],
        ["t", "second", *FIELDS],
    )
    server_keys = sorted({k for s in samples for k in s.server})
    if server_keys:  # the SUT's own series (Driver.server_sample), same time axis
        write_csv(
            trial_dir / "server.csv",
            [{"t": s.t, "second": s.t - window_start, **s.server} for s in samples],
            ["t", "second", *server_keys],
        )
    hists = {k: h.to_dict() for k, h in rec.hist.items()}
    for key, sub in rec.subs.items():  # a class's or a stage's: classes.get.latency, ...
        hists.update({f"{key}.{k}": h.to_dict() for k, h in sub.hist.items() if h.count})
    write_json(trial_dir / "histograms.json", hists)


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else [])
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_result(trial_dir: Path) -> TrialResult:
    """metrics.json, validated against the schema (raises on a corrupt file)."""
    return TrialResult.model_validate(read_json(trial_dir / "metrics.json"))
