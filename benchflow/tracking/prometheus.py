"""Each trial's summary as a Prometheus textfile, for node_exporter's textfile collector
(where a benchmark node may not open network endpoints).

With ``monitor.textfile_dir`` set (or ``$BENCHFLOW_TEXTFILE_DIR``), every trial
writes ``benchflow_<trial_id>.prom`` there when it ends — atomically (written
beside it under another name, then renamed), so the collector never reads half
a file. Every series carries the labels ``scenario``, ``service``, ``target``,
``sweep_id`` and ``trial_id``; the Grafana dashboard in
``docs/grafana/benchflow.json`` reads them. ``benchflow gc`` prunes old files.

Run node_exporter with ``--collector.textfile.directory=DIR``.
"""

from __future__ import annotations

from pathlib import Path

from benchflow.results import read_json

PREFIX = "benchflow_"
LABELS = ("scenario", "service", "target", "sweep_id", "trial_id")
QUANTILES = {"p50": "0.5", "p90": "0.9", "p95": "0.95", "p99": "0.99", "p999": "0.999"}

# name -> help; every metric is a gauge with LABELS (+ the extra labels noted)
METRICS = {
    "trial_info": "1 per trial; labels status, valid, unit, driver, host",
    "trial_end_timestamp_seconds": "when the trial ended (Unix time)",
    "trial_duration_seconds": "wall time of the trial, setup to teardown",
    "trial_valid": "1 when the result is valid (docs/metrics.md), else 0",
    "trial_failed": "1 when the trial failed, else 0",
    "throughput": "headline throughput, in the unit of trial_info's unit label",
    "latency_ms": "latency from the intended start, by quantile label",
    "latency_mean_ms": "mean latency",
    "latency_max_ms": "largest latency",
    "requests_completed": "requests completed in the measured phase",
    "error_rate": "failed requests / requests",
    "timeouts": "requests that timed out",
    "cpu_util_percent": "CPU of the SUT's (or harness') processes, percent of one core",
    "ram_mb": "resident memory of the SUT's (or harness') processes",
    "gpu_util_percent": "GPU utilisation",
    "gpu_mem_mb": "GPU memory used",
}


def textfile_path(textfile_dir: Path, trial_id: str) -> Path:
    return Path(textfile_dir) / f"{PREFIX}{trial_id}.prom"


def export_trial(trial_dir: Path, textfile_dir: Path) -> Path:
    """Write the trial's summary to ``textfile_dir``; returns the file."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    trial_dir = Path(trial_dir)
    meta = read_json(trial_dir / "meta.json")
    result = None
    if meta.get("status") == "finished" and (trial_dir / "metrics.json").exists():
        result = read_json(trial_dir / "metrics.json")
    registry = CollectorRegistry()
    sweep = meta.get("sweep") or {}
    base = {
        "scenario": meta.get("scenario", ""),
        "service": meta.get("service", ""),
        "target": meta.get("target") or "",
        "sweep_id": sweep.get("sweep_id") or "",
        "trial_id": meta["trial_id"],
    }

    gauges: dict[str, Gauge] = {}

    def gauge(name: str, value: float | None, **extra: str) -> None:
        if value is None:
            return
        if name not in gauges:
            gauges[name] = Gauge(PREFIX + name, METRICS[name], [*LABELS, *extra], registry=registry)
        gauges[name].labels(**base, **extra).set(float(value))

    valid = bool(result and result["validity"]["valid"])
    gauge(
        "trial_info",
        1,
        status=meta.get("status", ""),
        valid=str(valid).lower(),
        unit=(result or {}).get("throughput", {}).get("unit", ""),
        driver=meta.get("driver", ""),
        host=str((meta.get("lineage") or {}).get("host") or ""),
    )
    ended = meta.get("ended_at_epoch")
    gauge("trial_end_timestamp_seconds", ended)
    if ended:
        gauge("trial_duration_seconds", ended - meta["started_at_epoch"])
    gauge("trial_valid", float(valid))
    gauge("trial_failed", float(meta.get("status") == "failed"))
    if result is not None:
        gauge("throughput", result["throughput"]["value"])
        lat = result.get("latency_ms") or {}
        for p, q in QUANTILES.items():
            gauge("latency_ms", lat.get(p), quantile=q)
        gauge("latency_mean_ms", lat.get("mean"))
        gauge("latency_max_ms", lat.get("max"))
        gauge("requests_completed", (result.get("load") or {}).get("completed"))
        errors = result.get("errors") or {}
        gauge("error_rate", errors.get("rate"))
        gauge("timeouts", errors.get("timeouts"))
        res = result.get("resource") or {}
        gauge("cpu_util_percent", res.get("cpu_util"))
        gauge("ram_mb", res.get("ram_mb"))
        gauge("gpu_util_percent", res.get("gpu_util"))
        gauge("gpu_mem_mb", res.get("gpu_mem_mb"))
    out = textfile_path(textfile_dir, meta["trial_id"])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(out), registry)  # a temp file beside it, then rename(2)
    return out
