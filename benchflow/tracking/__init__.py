"""Tracking: everything that talks to MLflow.

The client (:mod:`.client`), a sweep's parent run (:mod:`.sweep_runs`), a trial's
upload from its directory on disk (:mod:`.upload`) and ``benchflow sync``
(:mod:`.sync`); the team's tracking server and its auth (:mod:`.server`,
:mod:`.auth`), and Prometheus textfiles (:mod:`.prometheus`). Results are on disk
before anything here runs: an unreachable server delays an upload, never loses a
trial.
"""

from benchflow.tracking.client import (
    client,
    ensure_experiment,
    find_run,
    resolved_uri,
    ui_hint,
)
from benchflow.tracking.sweep_runs import (
    SWEEP_LOCK,
    SWEEP_PARENT,
    Busy,
    file_lock,
    finish_sweep,
    start_sweep,
)
from benchflow.tracking.sync import (
    SyncReport,
    sync,
    trial_dirs,
)
from benchflow.tracking.upload import (
    MAX_CUSTOM_PARAMS,
    MAX_PARAM_LEN,
    TAG_COMPLETE,
    UPLOAD_LOCK,
    UPLOAD_MARKER,
    TrialState,
    inspect_trial,
    upload_trial,
)

__all__ = [
    "MAX_CUSTOM_PARAMS",
    "MAX_PARAM_LEN",
    "SWEEP_LOCK",
    "SWEEP_PARENT",
    "TAG_COMPLETE",
    "UPLOAD_LOCK",
    "UPLOAD_MARKER",
    "Busy",
    "SyncReport",
    "TrialState",
    "client",
    "ensure_experiment",
    "file_lock",
    "find_run",
    "finish_sweep",
    "inspect_trial",
    "resolved_uri",
    "start_sweep",
    "sync",
    "trial_dirs",
    "ui_hint",
    "upload_trial",
]
