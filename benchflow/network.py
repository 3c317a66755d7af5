"""This node's address as the other nodes of a cluster reach it.

A server started as a job, or the listener its client shards call back to, must
publish an address the other nodes can reach. ``socket.gethostname()`` is not
one: Debian maps a machine's own name to 127.0.1.1, and a login node often
cannot resolve a compute node's name at all. The address of the interface that
routes toward the login node (``SLURM_SUBMIT_HOST``) or the Slurm controller is
one, found the way Dask and Ray find theirs: a UDP socket "connected" to that
peer (nothing is sent) reports which local address the kernel would use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket


def _resolve(name: str) -> str | None:
    with contextlib.suppress(OSError, UnicodeError):
        return socket.gethostbyname(name)
    return None


def _source_toward(addr: str) -> str | None:
    """The local address the kernel routes ``addr`` from (no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((addr, 9))
        return s.getsockname()[0]
    return None


def _loopback(addr: str) -> bool:
    return ipaddress.ip_address(addr).is_loopback


def routable_address(environ=os.environ) -> str:
    """An IPv4 address of this node that the cluster's other nodes reach.

    Toward, in turn: the node the job was submitted from (``SLURM_SUBMIT_HOST``)
    and this host's own name; the first that gives a non-loopback address wins.
    On a single machine with no route anywhere, 127.0.0.1.
    """
    for peer in (environ.get("SLURM_SUBMIT_HOST"), socket.gethostname()):
        addr = _resolve(peer) if peer else None
        if addr and not _loopback(addr):
            src = _source_toward(addr)
            if src and not _loopback(src):
                return src
            return addr  # this host's own name: its address
    return "127.0.0.1"
