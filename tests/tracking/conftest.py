"""What the tracking tests share: a scratch directory whose trials log to the
session's tracking server (PostgreSQL + S3), each test in its own experiment."""

from __future__ import annotations

import uuid

import pytest
from conftest import Workdir


@pytest.fixture
def server_workdir(workdir, tracking_server) -> Workdir:
    """``workdir`` with ``MLFLOW_TRACKING_URI`` at the session's tracking server; run
    trials with ``tracking=server`` and :func:`scenario_args`."""
    workdir.env["MLFLOW_TRACKING_URI"] = tracking_server.url
    return workdir


@pytest.fixture
def scenario() -> str:
    """A scenario (and so an experiment) of this test's own on the shared server."""
    return f"t{uuid.uuid4().hex[:10]}"


# trials against the server: no retries (a server that is down refuses at once); the
# default 30 s timeout, as a busy shared machine may answer slowly
SERVER = ["tracking=server", "tracking.http_retries=0", "progress=off"]
