"""A sweep's logs in one tarball, filtered by component and time (``benchflow logs``).

What a sweep logged lives in several places: each trial's ``logs/events.jsonl``
(the harness) and ``logs/NAME.jsonl`` (each server it launched, line by line),
the Hydra job logs in the sweep directory (``<job>/*.log``) and, on Slurm, the
jobs' stdout/stderr (``logs/%x_%j.out|err``). The bundle holds, as JSON lines of
one schema (timestamp, level, trial_id, component, message):

- ``events.jsonl``: every selected record of the sweep, merged in time order,
  each with the ``source`` file it came from — the view that correlates the
  harness, the SUTs and the jobs;
- ``trials/<trial_id>/<file>.jsonl`` and ``sweep/<path>.jsonl``: the same, per source;
- ``manifest.json``: the sweep, the filters, counts per component.

Text logs are converted: Hydra's ``[time][logger][LEVEL] - message`` lines keep
their time, logger and level; a line of a job's stdout/stderr gets the file's
modification time (``approx_time: true``) and the level found in it.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from benchflow.results import read_json
from benchflow.results.logs import entry, sut_entry
from benchflow.secrets import mask
from benchflow.sweeps.manifest import RETRIED_FILE, TRIALS_FILE

_HYDRA_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[([^\]]*)\]\[([A-Z]+)\] - (.*)$"
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``90d``, ``1w`` in seconds; ValueError otherwise."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r}: a duration such as 90s, 30m, 2h, 90d or 1w")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``, ``1w``)
    or an ISO 8601 time (UTC unless it names its offset). Returns Unix time."""
    now = time.time() if now is None else now
    if _DURATION.match(text.strip()):
        return now - parse_duration(text)
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: a duration (30m, 2h, 7d) or an ISO time (2026-11-20T08:00)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def record_time(record: dict) -> float:
    try:
        return datetime.fromisoformat(str(record["timestamp"])).timestamp()
    except (KeyError, ValueError):
        return 0.0


def component_matches(component: str, wanted: Iterable[str]) -> bool:
    """``sut`` matches ``sut.postgres``; ``benchflow.trial`` matches itself and its children."""
    wanted = list(wanted)
    if not wanted:
        return True
    return any(component == w or component.startswith(w.rstrip(".") + ".") for w in wanted)


def sweep_trial_dirs(sweep_dir: Path) -> list[Path]:
    """The trial directories of a sweep: those its jobs listed, and every one whose
    ``meta.json`` names the sweep (a killed trial is never listed)."""
    found: dict[str, Path] = {}
    for name in (TRIALS_FILE, RETRIED_FILE):
        # a sweep's jobs list theirs in <job>/; a single run (_runs/<time>/) at the top
        for listing in [*sweep_dir.glob(f"*/{name}"), *sweep_dir.glob(name)]:
            for line in listing.read_text().split():
                # listed relative to where the sweep ran: find it beside _sweeps/
                p = sweep_dir.parent.parent / Path(line).name
                if p.is_dir():
                    found[p.name] = p
    for meta_path in sweep_dir.parent.parent.glob("*/meta.json"):
        if meta_path.parent.name in found:
            continue
        try:
            sweep = read_json(meta_path).get("sweep") or {}
        except (OSError, ValueError):
            continue
        if sweep.get("sweep_id") == sweep_dir.name:
            found[meta_path.parent.name] = meta_path.parent
    return sorted(found.values(), key=lambda p: p.name)


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut off by a kill
            if isinstance(rec, dict):
                yield rec


def _hydra_log(path: Path) -> Iterator[dict]:
    """Hydra's job log (``[2026-11-22 23:22:50,642][benchflow.trial][INFO] - msg``,
    local time); continuation lines belong to the record before them."""
    current: dict | None = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            m = _HYDRA_LINE.match(line)
            if m:
                if current is not None:
                    yield current
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                current = entry(t, m.group(3), None, m.group(2), m.group(4))
            elif current is not None:
                current["message"] = f"{current['message']}\n{line}"
    if current is not None:
        yield current


def _stream_log(path: Path, component: str) -> Iterator[dict]:
    stream = "stderr" if path.suffix == ".err" else "stdout"
    t = path.stat().st_mtime
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = mask(raw.rstrip("\n"), set())
            if line.strip():
                rec = sut_entry(line, stream, component, None, t)
                rec["component"] = component
                rec["approx_time"] = True
                yield rec


@dataclass
class Source:
    """One log file of the sweep and where its records go in the bundle."""

    path: Path
    arcname: str  # in the tarball (.jsonl)
    kind: str  # jsonl | hydra | stream
    component: str = ""  # stream files: the component to give their lines

    def records(self) -> Iterator[dict]:
        if self.kind == "jsonl":
            return _jsonl(self.path)
        if self.kind == "hydra":
            return _hydra_log(self.path)
        return _stream_log(self.path, self.component)


def sources(sweep_dir: Path) -> list[Source]:
    """Every log file of the sweep (see the module doc)."""
    out: list[Source] = []
    for tdir in sweep_trial_dirs(sweep_dir):
        for f in sorted((tdir / "logs").glob("*.jsonl")):
            out.append(Source(f, f"trials/{tdir.name}/{f.name}", "jsonl"))
    for f in sorted(sweep_dir.rglob("*")):
        rel = f.relative_to(sweep_dir)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts):
            continue  # .submitit pickles and the like
        if f.suffix == ".log":
            out.append(Source(f, f"sweep/{rel.with_suffix('.jsonl')}", "hydra"))
        elif f.suffix in (".out", ".err"):
            out.append(
                Source(f, f"sweep/{rel}.jsonl", "stream", component=f"job.{f.stem.split('_')[0]}")
            )
    return out


@dataclass
class Bundle:
    path: Path
    records: int = 0
    by_component: Counter = field(default_factory=Counter)
    trials: int = 0
    files: int = 0


def bundle(
    sweep_dir: Path,
    out: Path,
    components: Iterable[str] = (),
    since: float | None = None,
) -> Bundle:
    """Write the sweep's logs, filtered, to the tarball ``out`` (gzip)."""
    components = list(components)
    srcs = sources(sweep_dir)
    trial_ids = {s.arcname.split("/")[1] for s in srcs if s.arcname.startswith("trials/")}
    result = Bundle(Path(out), trials=len(trial_ids))
    merged: list[tuple[float, int, dict]] = []
    per_file: dict[str, list[str]] = {}
    seen: set[tuple[str, str, int]] = set()  # the job log repeats the trials' records
    for src in srcs:
        lines = []
        for rec in src.records():
            if not component_matches(str(rec.get("component", "")), components):
                continue
            t = record_time(rec)
            if since is not None and t < since:
                continue
            key = (str(rec.get("component")), str(rec.get("message")).split("\n")[0], int(t * 1000))
            if src.kind == "jsonl":
                seen.add(key)
            elif key in seen:
                continue
            lines.append(json.dumps(rec))
            merged.append((t, len(merged), {**rec, "source": src.arcname}))
            result.by_component[str(rec.get("component"))] += 1
        if lines:
            per_file[src.arcname] = lines
    merged.sort(key=lambda x: (x[0], x[1]))
    result.records = len(merged)
    result.files = len(per_file)
    manifest = {
        "sweep_id": sweep_dir.name,
        "sweep_dir": str(sweep_dir),
        "components": components or None,
        "since": datetime.fromtimestamp(since, timezone.utc).isoformat() if since else None,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "records": result.records,
        "by_component": dict(result.by_component),
        "files": sorted(per_file),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    root = f"logs-{sweep_dir.name}"
    with tarfile.open(out, "w:gz") as tar:
        _add(tar, f"{root}/manifest.json", json.dumps(manifest, indent=2) + "\n")
        _add(tar, f"{root}/events.jsonl", "".join(json.dumps(r) + "\n" for _, _, r in merged))
        for arcname, lines in sorted(per_file.items()):
            _add(tar, f"{root}/{arcname}", "\n".join(lines) + "\n")
    return result


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
