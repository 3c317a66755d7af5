"""One client shard started by srun on a Slurm task (see benchflow.load.clients).

``python -m benchflow.load.shard HOST:PORT STALL_TIMEOUT_S``, with the
connection's key in ``BENCHFLOW_SHARD_AUTHKEY``: connects back to the trial's
coordinator, receives the driver, and runs its share of the load.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Client

from benchflow.load.clients import _child


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    authkey = bytes.fromhex(os.environ.pop("BENCHFLOW_SHARD_AUTHKEY"))
    conn = Client((host, int(port)), authkey=authkey)
    _child(conn, None, float(sys.argv[2]))


if __name__ == "__main__":
    main()
