"""Everything that talks to MLflow: experiments, sweep parent runs, trial upload, sync.

A trial is written to disk first and uploaded from its files afterwards, by the
same function whether it runs right after the trial or later in ``benchflow
sync``. The upload is keyed by the trial id and idempotent: the run id is kept in
``upload.json`` (and found again by the ``benchflow.trial_id`` tag if that file
was lost); params, metrics (with fixed timestamps) and artifacts are re-sent
identically; the run is marked complete (``benchflow.upload=complete``) last. A
second upload of a complete trial does nothing, and one interrupted half-way is
completed in place, never duplicated.

Concurrent uploaders never duplicate a run either: the upload of a trial holds
a lock on its directory (the trial's own upload and a ``benchflow sync`` running
meanwhile cannot both create a run), and a sweep's parent run that has to be
created late (MLflow was down when the sweep started) is created under a lock
on the sweep directory by whichever trial gets there first.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchflow.results import lineage, read_csv, read_json, write_json
from benchflow.results.identity import flatten, workload_hash
from benchflow.secrets import is_secret_key, mask, secret_values
from benchflow.tracking.client import client, ensure_experiment, find_run
from benchflow.tracking.sweep_runs import file_lock, parent_for
from drivers.base import CUSTOM_FILE

log = logging.getLogger("benchflow.tracking")


UPLOAD_MARKER = "upload.json"


UPLOAD_LOCK = ".upload.lock"  # dot files are not uploaded as artifacts


MAX_PARAM_LEN = 6000  # MLflow 3's limit for a param value


TAG_COMPLETE = "benchflow.upload"


# -- trials ------------------------------------------------------------------------
@dataclass
class TrialState:
    """What the files of a trial directory say about it."""

    trial_dir: Path
    meta: dict[str, Any]
    status: str  # finished | failed | running | incomplete
    uploaded: bool

    @property
    def trial_id(self) -> str:
        return self.meta["trial_id"]


def inspect_trial(trial_dir: Path) -> TrialState:
    """Read a trial directory; raises ValueError when it is corrupt."""
    try:
        meta = read_json(trial_dir / "meta.json")
        _ = meta["trial_id"], meta["status"], meta["scenario"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable meta.json: {exc}") from None
    status = meta["status"]
    if status == "running" and not _alive(meta):
        status = "incomplete"
    if status == "finished":
        from benchflow.results import load_result

        try:
            load_result(trial_dir)
        except Exception as exc:
            raise ValueError(f"corrupt metrics.json: {str(exc).splitlines()[0]}") from None
    marker = trial_dir / UPLOAD_MARKER
    uploaded = False
    if marker.exists():
        try:
            uploaded = read_json(marker).get("state") == "complete"
        except (OSError, ValueError):
            uploaded = False
    return TrialState(trial_dir, meta, status, uploaded)


def _alive(meta: dict) -> bool:
    proc = meta.get("process") or {}
    if proc.get("host") != socket.gethostname():
        return False  # another node: only Slurm can tell; treat as not running here
    try:
        p = psutil.Process(int(proc["pid"]))
        return abs(p.create_time() - float(proc["create_time"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


_RUN_STATUS = {"finished": "FINISHED", "failed": "FAILED", "incomplete": "KILLED"}


def upload_trial(trial_dir: Path, c=None, uri: str | None = None, wait: bool = True) -> str:
    """Upload one trial directory to MLflow (idempotently); returns the run id.

    ``uri`` overrides the store the trial was run against (``meta.tracking_uri``).
    Holds the trial's upload lock; with ``wait=False`` raises :class:`Busy` when
    another process is uploading it.
    """
    with file_lock(Path(trial_dir) / UPLOAD_LOCK, wait=wait):
        return _upload_trial(Path(trial_dir), c, uri)


def _upload_trial(trial_dir: Path, c, uri: str | None) -> str:
    from mlflow.entities import Metric, Param, RunTag

    t0 = time.perf_counter()
    state = inspect_trial(trial_dir)
    meta = state.meta
    if state.status == "running":
        raise RuntimeError(f"trial {state.trial_id} is still running")
    target_uri = uri or meta.get("tracking_uri")
    c = c or client(target_uri)
    marker_path = trial_dir / UPLOAD_MARKER
    marker = read_json(marker_path) if marker_path.exists() else {}
    if marker.get("state") == "complete" and marker.get("tracking_uri") == target_uri:
        return marker["run_id"]

    exp_id = ensure_experiment(c, meta["experiment"])
    run_id = None
    if marker.get("tracking_uri") == target_uri and marker.get("run_id"):
        run_id = marker["run_id"]
    else:
        found = find_run(c, exp_id, "benchflow.trial_id", state.trial_id)
        run_id = found.info.run_id if found else None
    metrics_path = trial_dir / "metrics.json"
    result = read_json(metrics_path) if state.status == "finished" else None
    tags = _trial_tags(meta, result, state.status)
    tags["benchflow.workload_hash"] = workload_hash(
        _params(trial_dir, meta), meta.get("target_keys") or ()
    )
    parent = parent_for(c, exp_id, meta)
    if parent:
        tags["mlflow.parentRunId"] = parent
    if run_id is None:
        run = c.create_run(
            exp_id,
            start_time=int(meta["started_at_epoch"] * 1000),
            tags=tags,
            run_name=meta.get("run_name"),
        )
        run_id = run.info.run_id
        write_json(marker_path, {"run_id": run_id, "tracking_uri": target_uri, "state": "started"})

    end_ms = int((meta.get("ended_at_epoch") or meta["started_at_epoch"]) * 1000)
    params = [Param(k, v) for k, v in _params(trial_dir, meta).items()]
    metrics = []
    if result is not None:
        from benchflow.results import TrialResult, metrics_flat

        flat = metrics_flat(TrialResult.model_validate(result))
        metrics += [Metric(k, v, end_ms, 0) for k, v in flat.items()]
        metrics += series_metrics(trial_dir, meta)
    c.log_batch(
        run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items()]
    )
    for f in sorted(trial_dir.rglob("*")):
        if f.is_file() and f.name != UPLOAD_MARKER and not f.name.startswith("."):
            rel = f.parent.relative_to(trial_dir)
            c.log_artifact(run_id, str(f), None if str(rel) == "." else str(rel))
    c.set_terminated(run_id, _RUN_STATUS[state.status], end_time=end_ms)
    c.set_tag(run_id, TAG_COMPLETE, "complete")
    write_json(
        marker_path,
        {
            "run_id": run_id,
            "tracking_uri": target_uri,
            "state": "complete",
            "uploaded_at": time.time(),
            "seconds": time.perf_counter() - t0,
        },
    )
    return run_id


def _trial_tags(meta: dict, result: dict | None, status: str) -> dict[str, str]:
    tags = dict(lineage.tags(meta["lineage"])) if meta.get("lineage") else {}
    tags.update(
        {
            "benchflow.trial_id": meta["trial_id"],
            "benchflow.scenario": meta["scenario"],
            "benchflow.service": meta["service"],
            "benchflow.driver": meta["driver"],
            "benchflow.driver_package": meta.get("driver_package", ""),
            "benchflow.seed": str(meta["seed"]),
            "benchflow.started_at": str(meta["started_at_epoch"]),
            "benchflow.config_hash": meta["config_hash"],
            "benchflow.repetition": str(meta["repetition"]),
            "benchflow.attempt": str(meta.get("attempt", 0)),
            "benchflow.status": status,
            "benchflow.overrides": " ".join(meta.get("overrides", []))[:5000],
        }
    )
    # the seed this repetition ran with, and its place in the sweep's order
    if meta.get("seed_effective") is not None:
        tags["benchflow.seed_effective"] = str(meta["seed_effective"])
    order = meta.get("order") or {}
    if order.get("mode"):
        tags["benchflow.order"] = str(order["mode"])
    if order.get("position") is not None:
        tags["benchflow.order_position"] = str(order["position"])
    if meta.get("identity"):
        tags["benchflow.identity"] = str(meta["identity"])
    if meta.get("target"):
        tags["benchflow.target"] = meta["target"]
        if meta.get("target_ref"):
            tags["benchflow.target_ref"] = meta["target_ref"]
        if meta.get("target_keys"):
            tags["benchflow.target_keys"] = ",".join(meta["target_keys"])[:5000]
    if meta.get("sweep"):
        tags["benchflow.sweep_id"] = meta["sweep"]["sweep_id"]
        tags["benchflow.sweep_job"] = str(meta["sweep"].get("job_num"))
    if result is not None:
        tags["benchflow.valid"] = str(result["validity"]["valid"]).lower()
        tags["benchflow.throughput_unit"] = result["throughput"]["unit"]
        if result["validity"]["reasons"]:
            tags["benchflow.invalid_reasons"] = "; ".join(result["validity"]["reasons"])[:5000]
    else:
        tags["benchflow.valid"] = "false"
    if meta.get("deprecated"):
        tags["benchflow.deprecated"] = "true"
    if meta.get("warnings"):
        tags["benchflow.warnings"] = "; ".join(meta["warnings"])[:5000]
    iso = meta.get("isolation")
    if iso:
        tags["benchflow.isolation"] = iso["mode"]
        if iso.get("key"):
            tags["benchflow.env_key"] = iso["key"]
    err = meta.get("error")
    if err:
        tags["benchflow.error_class"] = err["class"]
        tags["benchflow.error"] = err["message"][:5000]
        tags["benchflow.error_kind"] = err.get("kind", "unexpected")
        if meta.get("limit"):
            tags["benchflow.limit_exceeded"] = str(meta["limit"].get("resource"))
    elif status == "incomplete":
        tags["benchflow.error_class"] = "incomplete"
        tags["benchflow.error"] = "the trial process ended without finishing (killed?)"
    return tags


MAX_CUSTOM_PARAMS = 100  # the rest of a large custom block is in the custom.json artifact


_PARAM_KEY = re.compile(r"[^\w\-. /]")


def _params(trial_dir: Path, meta: dict) -> dict[str, str]:
    """The params of a trial directory: :func:`params_of` its effective config and
    its custom metadata."""
    import yaml

    cfg = yaml.safe_load((trial_dir / "effective_config.yaml").read_text()) or {}
    custom = trial_dir / CUSTOM_FILE
    return params_of(cfg, read_json(custom) if custom.exists() else None)


def params_of(cfg: dict, custom: dict | None = None) -> dict[str, str]:
    """The flattened effective config, secret keys removed, secret values masked;
    plus the driver's custom metadata as ``custom.*``.

    A trial's effective config is by value already (validated, canonical:
    ``benchflow.config.validate``); an older trial's holds the text of its config
    and is logged as it is (an interrupted upload is completed with the same
    params) — ``normalize_params`` reads those by value.
    """
    known = secret_values(cfg)
    out = {}
    for k, v in flatten(cfg).items():
        if is_secret_key(k):
            continue
        out[k] = mask(str(v), known)[:MAX_PARAM_LEN]
    if custom is not None:
        flat = flatten(custom, "custom")
        for k, v in list(flat.items())[:MAX_CUSTOM_PARAMS]:
            if is_secret_key(k):
                continue
            out[_PARAM_KEY.sub("_", k)[:250]] = mask(str(v), known)[:MAX_PARAM_LEN]
    return out


def series_metrics(trial_dir: Path, meta: dict):
    from mlflow.entities import Metric

    base_ms = int(meta.get("window_start_epoch", meta["started_at_epoch"]) * 1000)
    out = []
    ts = trial_dir / "timeseries.csv"
    if ts.exists():
        for row in read_csv(ts):
            step = int(row["second"])
            for k, v in row.items():
                if k != "second" and v not in ("", None):
                    out.append(Metric(f"timeseries/{k}", float(v), base_ms + step * 1000, step))
    for name, prefix in (("system.csv", "system"), ("server.csv", "server")):
        path = trial_dir / name
        if not path.exists():
            continue
        for row in read_csv(path):
            step = round(float(row["second"]))
            t_ms = int(float(row["t"]) * 1000)
            for k, v in row.items():
                if k not in ("t", "second") and v not in ("", None):
                    out.append(Metric(f"{prefix}/{k}", float(v), t_ms, step))
    return out
