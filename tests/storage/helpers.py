"""What the storage tests share: reading a sweep's trials, and scanning for leaked secrets."""

from __future__ import annotations

import json
from pathlib import Path


def trials(workdir, scenario: str = "adhoc") -> list[tuple[dict, dict | None]]:
    """(meta, metrics or None) of every trial of a scenario, in the order they ran."""
    out = []
    for d in workdir.trial_dirs(scenario):
        meta = json.loads((d / "meta.json").read_text())
        m = d / "metrics.json"
        out.append((meta, json.loads(m.read_text()) if m.exists() else None))
    return sorted(out, key=lambda t: t[0]["started_at_epoch"])


def assert_nowhere(secret: str, workdir, *texts: str) -> None:
    """``secret`` appears in no file under the workdir (results, MLflow store) nor in ``texts``."""
    assert len(secret) >= 8
    needle = secret.encode()
    for path in Path(workdir.path).rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"secret leaked into {path}"
    for t in texts:
        assert secret not in t, "secret leaked into the output"


def override(meta: dict, key: str) -> str | None:
    """The value a trial's overrides gave ``key`` (e.g. a swept ``service.op``)."""
    for o in meta["overrides"]:
        k, _, v = o.partition("=")
        if k == key:
            return v
    return None
