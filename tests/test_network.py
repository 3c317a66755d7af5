"""benchflow.network: the address a node publishes for the cluster's other nodes."""

from __future__ import annotations

import ipaddress
import socket

from benchflow.network import routable_address


def test_the_published_address_is_this_hosts_own_and_bindable():
    """Whatever the route, the address is IPv4, belongs to this host (a socket binds
    to it), and is loopback only when nothing else is there to route through."""
    addr = routable_address({})
    ipaddress.IPv4Address(addr)
    with socket.socket() as s:
        s.bind((addr, 0))
    others = [a for *_, (a, *_) in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    if any(not ipaddress.ip_address(a).is_loopback for a in others):
        assert not ipaddress.ip_address(addr).is_loopback


def test_a_submit_host_that_does_not_resolve_falls_back_to_this_host():
    addr = routable_address({"SLURM_SUBMIT_HOST": "no-such-host.invalid"})
    assert addr == routable_address({})
