"""The suite's own plumbing: under ``make test`` (pytest-xdist, ``--dist loadgroup``) the
tests of an area run on one worker, so its session servers and module fixtures start
once (conftest.py). xdist marks a grouped test by suffixing its node id with the group;
a test of a grouped area that runs without the suffix ran wherever xdist sent it."""

from __future__ import annotations

import os


def test_groups_reach_xdist(request):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: nothing to group (a plain `pytest` run)
    if request.config.getvalue("dist") != "loadgroup":
        return
    assert request.node.nodeid.endswith("@tracking"), (
        f"{request.node.nodeid}: the area's xdist group did not reach xdist (conftest's hook "
        "must run first, and xdist 3.8 needs pytest < 9)"
    )
