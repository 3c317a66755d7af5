#!/usr/bin/env python3
"""A real Slurm cluster on this machine, one node or several, for tests and benchmarks.

    python scripts/slurm_cluster.py start DIR [--nodes N]  # prints the environment to use it
    python scripts/slurm_cluster.py stop DIR    # cancels jobs, stops the daemons, removes nodes

Everything lives in DIR (configs, state, logs, sockets, the MariaDB data) and
every daemon listens on a free port, so it never touches a system Slurm or
another cluster started the same way. It runs munged, MariaDB, slurmdbd (so
``sacct`` works: without accounting, submitit waits forever on a job that died
without a result), slurmctld and slurmd, as root without systemd
(shared/RECIPES.md has the measured recipe).

The node advertises more than the host has (``SlurmdParameters=config_overrides``):
8 CPUs, 16 GB and ``Gres=gpu:2`` as a count without device files, so sweeps can
request GPUs and several tasks; requests are checked by reading them back
(``scontrol show job``, ``sacct``), nothing pretends to run on a GPU.
``DIR/env`` holds ``SLURM_CONF=...``; clients need only that variable.

**Several nodes** (``--nodes N``, N >= 2): each node is a slurmd in a network
namespace of its own (``ip netns``), with a UTS namespace (its own hostname) and
a mount namespace (its own ``/etc/hosts``), joined to this machine by a veth
pair on a bridge the script makes: a private /24 that exists only inside this
machine (``10.A.B.0/24`` from the controller's port; the controller and the
login side are ``.1``, node i is ``.(10+i)``). A node's only route is that
bridge, and this machine does not forward, so nothing a node sends leaves the
machine. Names resolve through ``/etc/netns/<ns>/hosts``, bound over
``/etc/hosts`` for the node's processes (the login side resolves no node name:
servers publish numeric addresses). The filesystem is shared, as on a cluster.
Node 1 carries the GPUs (``Gres=gpu:2``); the others have none, so a sweep of
GPU and CPU services lands each trial on a node that offers what it asked.
``stop`` kills every process in each namespace, then removes the namespaces,
links, bridge and hosts files; it reads what to remove from ``DIR/nodes.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

CPUS, MEM_MB, GPUS = 8, 16000, 2
PARTITIONS = ("debug", "gpu")  # debug is the default
ACCOUNT = "benchtest"
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")  # stop order
NETNS_ETC = Path("/etc/netns")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def _wait(what: str, cond, timeout_s: float = 30, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s\n{tail}")


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(d: Path, nodes: int = 1) -> dict[str, str]:
    """Start the cluster in ``d`` (``nodes`` >= 2: one network namespace per node);
    returns the environment clients need."""
    if os.geteuid() != 0:
        raise SystemExit("the test cluster runs its daemons as root (no systemd needed)")
    if nodes < 1:
        raise SystemExit(f"--nodes {nodes}: must be >= 1")
    needed = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sacctmgr"]
    if nodes > 1:
        needed += ["ip", "unshare", "nsenter"]
    for exe in needed:
        if shutil.which(exe) is None:
            raise SystemExit(f"{exe} not found: apt-get install {' '.join(_packages())}")
    d = d.resolve()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    host = socket.gethostname().split(".")[0]
    ports = {k: free_port() for k in ("ctld", "slurmd", "dbd", "mysql")}
    cluster = f"bf{ports['ctld']}"
    net = _Net.plan(ports["ctld"], nodes, host) if nodes > 1 else None
    if net:
        net.create(d)
    ctld_addr = net.ctld_addr if net else "127.0.0.1"

    # munge: its own key and socket; it refuses keys or dirs others can write
    m = d / "munge"
    m.mkdir(exist_ok=True)
    os.chmod(m, 0o755)  # clients must reach the socket; the key itself is 0400
    key = m / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    for p in (m, key):
        _chown(p, "munge")
    sock = m / "munge.socket"
    _run(
        [
            "runuser",
            "-u",
            "munge",
            "--",
            "munged",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={m / 'munged.pid'}",
            f"--log-file={m / 'munged.log'}",
            f"--seed-file={m / 'munged.seed'}",
        ]
    )
    _wait("munged", sock.exists, 10, m / "munged.log")
    (d / "munged.pid").write_text((m / "munged.pid").read_text())

    # MariaDB: a throwaway data dir on a free TCP port
    db = d / "mysql"
    if not (db / "mysql").exists():
        db.mkdir(exist_ok=True)
        _chown(db, "mysql")
        _run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={db}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
        )
    run = d / "mysqlrun"  # mariadbd runs as mysql and writes its pid, log, socket here
    run.mkdir(exist_ok=True)
    _chown(run, "mysql")
    msock = run / "mysql.sock"
    subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={db}",
            "--user=mysql",
            f"--socket={msock}",
            f"--port={ports['mysql']}",
            "--bind-address=127.0.0.1",
            f"--pid-file={run / 'mariadbd.pid'}",
            f"--log-error={run / 'mariadbd.log'}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=2",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait("mariadbd", lambda: msock.exists(), 60, run / "mariadbd.log")
    password = os.urandom(12).hex()
    _run(
        [
            "mariadb",
            f"--socket={msock}",
            "-e",
            f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';",
        ]
    )

    auth = f"AuthType=auth/munge\nAuthInfo=socket={sock}\n"
    dbd_conf = d / "slurmdbd.conf"
    dbd_conf.write_text(
        auth + f"DbdHost=localhost\nDbdAddr={ctld_addr}\nDbdPort={ports['dbd']}\nSlurmUser=root\n"
        f"PidFile={d / 'slurmdbd.pid'}\nLogFile={d / 'slurmdbd.log'}\n"
        "StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
        f"StoragePort={ports['mysql']}\nStorageUser=slurm\nStoragePass={password}\n"
        "StorageLoc=slurm_acct_db\n"
    )
    os.chmod(dbd_conf, 0o600)  # slurmdbd refuses a config others can read
    conf = d / "slurm.conf"
    (d / "state").mkdir(exist_ok=True)
    (d / "spool").mkdir(exist_ok=True)
    if net:
        node_lines = "".join(
            f"NodeName={n} NodeAddr={a} CPUs={CPUS} RealMemory={MEM_MB}"
            + (f" Gres=gpu:{GPUS}" if i == 0 else "")
            + " State=UNKNOWN\n"
            for i, (n, a) in enumerate(zip(net.names, net.addrs, strict=True))
        )
        gpu_node = net.names[0]
    else:
        node_lines = (
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={MEM_MB} "
            f"Gres=gpu:{GPUS} State=UNKNOWN\n"
        )
        gpu_node = host
    parts = "\n".join(
        f"PartitionName={p} Nodes=ALL Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE "
        "State=UP OverSubscribe=NO"
        for i, p in enumerate(PARTITIONS)
    )
    conf.write_text(
        f"ClusterName={cluster}\nSlurmctldHost={host}({ctld_addr})\n"
        f"SlurmctldPort={ports['ctld']}\nSlurmdPort={ports['slurmd']}\n"
        + auth
        + "SlurmUser=root\nSlurmdUser=root\n"
        f"StateSaveLocation={d / 'state'}\nSlurmdSpoolDir={d / 'spool'}/%n\n"
        f"SlurmctldPidFile={d / 'slurmctld.pid'}\nSlurmdPidFile={d / 'slurmd-%n.pid'}\n"
        f"SlurmctldLogFile={d / 'slurmctld.log'}\nSlurmdLogFile={d / 'slurmd-%n.log'}\n"
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
        f"DefMemPerCPU={MEM_MB // CPUS}\n"
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0\n"
        "MailProg=/bin/true\nReturnToService=2\nJobRequeue=1\n"
        "KillWait=3\nMinJobAge=300\nInactiveLimit=0\nWaittime=0\nMessageTimeout=20\n"
        "AccountingStorageType=accounting_storage/slurmdbd\n"
        f"AccountingStorageHost={ctld_addr}\nAccountingStoragePort={ports['dbd']}\n"
        # the munge socket for talking to slurmdbd (else the default /run/munge one)
        f"AccountingStoragePass={sock}\n"
        "JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=5\n"
        "JobAcctGatherParams=OverMemoryKill\nJobCompType=jobcomp/none\n"
        "AccountingStorageTRES=gres/gpu\n"
        # GPUs as a bare count: no device files exist here, config_overrides makes
        # slurmd accept 8 CPUs / 16 GB / 2 GPUs on a 2-core host without draining.
        "GresTypes=gpu\nSlurmdParameters=config_overrides\n" + node_lines + parts + "\n"
    )
    # slurmd drops file-less GPUs ("Removing file-less GPU") and refuses regular
    # files ("not a valid character or block device"): fake devices with /dev/null's
    # numbers make a GPU count Slurm schedules (CUDA_VISIBLE_DEVICES is set), no more.
    dev = d / "dev"
    dev.mkdir(exist_ok=True)
    for i in range(GPUS):
        if not (dev / f"nvidia{i}").exists():
            os.mknod(dev / f"nvidia{i}", 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    (d / "gres.conf").write_text(
        f"AutoDetect=off\nNodeName={gpu_node} Name=gpu File={dev}/nvidia[0-{GPUS - 1}]\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}

    subprocess.Popen(
        ["slurmdbd"],
        env={**env, "SLURM_CONF": str(conf)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    ).wait()  # forks itself
    # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF
    _wait("slurmdbd", lambda: _port_open(ports["dbd"], ctld_addr), 60, d / "slurmdbd.log")
    _run(["sacctmgr", "-i", "add", "cluster", cluster], env=env)
    _run(["sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={cluster}"], env=env)
    _run(
        ["sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}", f"cluster={cluster}"],
        env=env,
    )
    _run(["slurmctld", "-i"], env=env)
    _wait("slurmctld", lambda: _port_open(ports["ctld"], ctld_addr), 30, d / "slurmctld.log")
    if net:
        for ns, name in zip(net.namespaces, net.names, strict=True):
            (d / "spool" / name).mkdir(exist_ok=True)
            # Its network namespace, and a UTS and mount namespace of its own: its
            # hostname, and its hosts file bound over /etc/hosts. Not `ip netns exec`:
            # that remounts /sys without the cgroup tree, and slurmd then refuses to
            # start ("No filesystem mounted on /sys/fs/cgroup"). slurmd forks into the
            # background; its job steps inherit the three namespaces.
            _run(
                ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount", "--",
                 "sh", "-c", 'mount --bind "$2" /etc/hosts && hostname "$1" && exec slurmd -N "$1"',
                 "sh", name, str(NETNS_ETC / ns / "hosts")],
                env=env,
            )  # fmt: skip
        _wait("slurmd idle", lambda: _idle(env, nodes), 60, d / f"slurmd-{net.names[-1]}.log")
        _run(["srun", f"--nodes={nodes}", "--time=1", "true"], env=env, timeout=60)
        # the probe's nodes stay "completing" until their slurmd reports the step's end
        # (seconds, on a loaded machine): ready means idle again
        _wait("nodes idle after the probe", lambda: _idle(env, nodes), 60)
    else:
        _run(["slurmd", "-N", host], env=env)
        _wait("slurmd idle", lambda: _idle(env), 60, d / f"slurmd-{host}.log")
        _run(["srun", "--time=1", "true"], env=env, timeout=60)  # the end-to-end probe
        _wait("node idle after the probe", lambda: _idle(env), 60)
    out = {
        "SLURM_CONF": str(conf),
        "SLURM_CLUSTER": cluster,
        "SLURM_ACCOUNT_NAME": ACCOUNT,
        "SLURM_NODE": net.names[0] if net else host,
    }
    if net:
        out["SLURM_NODES"] = ",".join(net.names)
        out["SLURM_NODE_ADDRS"] = ",".join(net.addrs)
        out["SLURM_CTLD_ADDR"] = net.ctld_addr
    (d / "env").write_text("".join(f"{k}={v}\n" for k, v in out.items()))
    return out


def _port_open(port: int, addr: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((addr, port), 0.5):
        return True
    return False


def _idle(env, nodes: int = 1) -> bool:
    p = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True
    )
    return p.returncode == 0 and sum(" idle" in ln for ln in p.stdout.splitlines()) >= nodes


class _Net:
    """The nodes' namespaces, links and addresses (recorded in ``DIR/nodes.json``)."""

    def __init__(self, tag: str, subnet: str, names: list[str], host: str) -> None:
        self.tag, self.subnet, self.names, self.host = tag, subnet, names, host
        self.ctld_addr = f"{subnet}.1"
        self.addrs = [f"{subnet}.{10 + i}" for i in range(1, len(names) + 1)]
        self.namespaces = list(names)  # a node's namespace is named after it
        self.bridge = f"{tag}br"

    @classmethod
    def plan(cls, port: int, nodes: int, host: str) -> _Net:
        tag = f"bf{port}"  # interface names are at most 15 characters
        subnet = f"10.{port >> 8}.{port & 255}"
        return cls(tag, subnet, [f"{tag}n{i}" for i in range(1, nodes + 1)], host)

    def create(self, d: Path) -> None:
        # recorded first, so a start that fails half way is still undone by stop
        (d / "nodes.json").write_text(json.dumps(self.__dict__, indent=2))
        ip = ["ip"]
        _run([*ip, "link", "add", self.bridge, "type", "bridge"])
        _run([*ip, "addr", "add", f"{self.ctld_addr}/24", "dev", self.bridge])
        _run([*ip, "link", "set", self.bridge, "up"])
        hosts = "127.0.0.1 localhost\n" + f"{self.ctld_addr} {self.host}\n"
        hosts += "".join(f"{a} {n}\n" for n, a in zip(self.names, self.addrs, strict=True))
        for i, (ns, addr) in enumerate(zip(self.namespaces, self.addrs, strict=True), 1):
            outer, inner = f"{self.tag}v{i}", f"{self.tag}p{i}"
            (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / ns / "hosts").write_text(hosts)
            _run([*ip, "netns", "add", ns])
            _run([*ip, "link", "add", outer, "type", "veth", "peer", "name", inner])
            _run([*ip, "link", "set", inner, "netns", ns])
            _run([*ip, "link", "set", outer, "master", self.bridge, "up"])
            inside = [*ip, "netns", "exec", ns, "ip"]
            _run([*inside, "link", "set", "lo", "up"])
            _run([*inside, "link", "set", inner, "name", "eth0"])
            _run([*inside, "addr", "add", f"{addr}/24", "dev", "eth0"])
            _run([*inside, "link", "set", "eth0", "up"])
            # the login side's other addresses (srun may call back on one) are reached
            # through the bridge; this machine does not forward beyond them
            _run([*inside, "route", "add", "default", "via", self.ctld_addr])


def _remove_nodes(d: Path) -> None:
    """Kill every process in the nodes' namespaces, then remove what start made."""
    try:
        net = json.loads((d / "nodes.json").read_text())
    except (OSError, ValueError):
        return
    for ns in net["namespaces"]:
        for _ in range(50):
            p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids = [int(x) for x in p.stdout.split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # its veth goes too
        shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
    subprocess.run(["ip", "link", "del", net["bridge"]], capture_output=True)
    (d / "nodes.json").unlink()


def stop(d: Path) -> None:
    """Cancel every job, then stop the daemons by the pids in their pid files."""
    d = d.resolve()
    conf = d / "slurm.conf"
    if conf.exists() and _alive(_pid(d / "slurmctld.pid")):
        env = {**os.environ, "SLURM_CONF": str(conf)}
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                ["scancel", "--full", "--user=root"], env=env, timeout=15, capture_output=True
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                q = subprocess.run(
                    ["squeue", "-h"], env=env, capture_output=True, text=True, timeout=10
                )
                if not q.stdout.strip():
                    break
                time.sleep(0.3)
    for name in DAEMONS:
        # slurmd: one pid file per node (slurmd-<node>.pid; slurmd.pid before --nodes)
        files = [*sorted(d.glob("slurmd-*.pid")), d / "slurmd.pid"] if name == "slurmd" else []
        files = files or [d / f"{name}.pid"]
        for f in files:  # mariadbd writes its own pid file into mysqlrun/
            pid = _pid(f) or _pid(d / "mysqlrun" / f"{name}.pid")
            if not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    _remove_nodes(d)


def _packages() -> list[str]:
    return ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--nodes", type=int, default=1, help="slurmd nodes (>= 2: namespaces)")
    args = ap.parse_args()
    if args.action == "start":
        t0 = time.monotonic()
        try:
            env = start(args.dir, args.nodes)
        except BaseException:
            if not os.environ.get("SLURM_CLUSTER_KEEP"):
                stop(args.dir)
            raise
        print(json.dumps({**env, "seconds": round(time.monotonic() - t0, 2)}))
    else:
        stop(args.dir)


if __name__ == "__main__":
    sys.exit(main())
