"""Servers as jobs: a SUT running as a Slurm job that client sweeps point at.

``benchflow servers start SERVICE`` submits a job that starts the service's
server (its driver's :meth:`~drivers.base.Driver.server_recipe`), waits until it
answers, and writes the instance record ``<state dir>/<id>.json`` with the
endpoint; the command prints the endpoint once the job says it is ready. Client
sweeps then use ``service.server=ID`` (or ``service.mode=server
service.endpoint=URL``). When the job is cancelled (``servers stop``, scancel,
time limit) or its server dies, the job stops the server and removes its record
and work directory: nothing is left behind but the Slurm log.

The state directory must be visible from the login node and the compute nodes
(default ``~/.benchflow/servers``; ``BENCHFLOW_SERVERS_DIR`` or ``--state-dir``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from benchflow.sut.endpoints import Instance, read_instance

log = logging.getLogger("benchflow.servers")


# -- recipes -----------------------------------------------------------------------
def recipes() -> list[dict[str, Any]]:
    """The service recipes (conf/service/*.yaml), with driver versions and images."""
    import yaml

    from benchflow.config import conf_dir
    from drivers import discovery

    out = []
    for f in sorted((conf_dir() / "service").glob("*.yaml")):
        raw = yaml.safe_load(f.read_text()) or {}
        name = raw.get("driver", f.stem)
        try:
            cls = discovery.load(name)
            info = discovery.info(name)
            version = f"{info.package}=={info.version}"
            settings = cls.Settings.model_validate({**raw, "name": f.stem, "driver": name})
            server = cls.server_recipe(settings, "HOST", 0) is not None
        except Exception:
            version, server = "(driver not installed)", False
        out.append(
            {
                "recipe": f.stem,
                "driver": name,
                "version": version,
                "image": raw.get("image") or raw.get("container"),
                "server": server,
                "resources": raw.get("resources", {}),
            }
        )
    return out


# -- the job side ------------------------------------------------------------------
class _Stop(BaseException):
    pass


def serve(server_id: str, spec_resolved: dict, host: str | None, d: str) -> str:
    """Runs in the Slurm job: start the server, publish its endpoint, serve until stopped.

    ``host`` None: the address the cluster's other nodes reach this node at, found
    here, on the node the job landed on (not on the login node that submitted it).
    """
    from benchflow.config import validate
    from benchflow.network import routable_address
    from benchflow.sut.servers import ServerProcess, free_port, http_ready, tcp_ready

    sd = Path(d)
    work = sd / server_id
    work.mkdir(parents=True, exist_ok=True)
    inst = read_instance(server_id, sd)
    if inst is None:
        return "no record (stopped before it started)"

    def _term(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGTERM, _term)
    spec = validate(spec_resolved)
    host = host or routable_address()
    proc = None
    try:
        port = free_port(host)
        recipe = spec.driver_cls.server_recipe(spec.service, host, port)
        proc = ServerProcess(spec.service.name, recipe.cmd, work / "logs", cwd=work)

        def ready() -> bool:
            if recipe.ready == "http":
                return http_ready(host, recipe.port, recipe.ready_path)
            return tcp_ready(host, recipe.port)

        timeout = getattr(spec.service, "ready_timeout_s", 120)
        proc.wait_ready(ready, timeout)
        inst.endpoint = f"{recipe.scheme}://{host}:{recipe.port}"
        inst.node, inst.state, inst.ready_at = socket.gethostname(), "ready", time.time()
        inst.job_id = os.environ.get("SLURM_JOB_ID", inst.job_id)
        inst.save(sd)
        print(f"{server_id}: {spec.service.name} ready at {inst.endpoint}", flush=True)
        while proc.alive():
            time.sleep(1)
        raise RuntimeError(f"{spec.service.name} exited with code {proc.proc.returncode}")
    except _Stop:
        return "stopped"
    finally:
        if proc is not None:
            proc.stop(grace_s=5)
        # nothing left behind: the record and the work dir go with the job
        with contextlib.suppress(OSError):
            (sd / f"{server_id}.json").unlink()
        shutil.rmtree(work, ignore_errors=True)


# -- the login side ----------------------------------------------------------------
def start(
    service: str,
    overrides: list[str],
    host: str | None,
    d: Path,
    timeout_s: float,
) -> Instance:
    """Submit a server job and wait until it is ready (or failed: then nothing is left)."""
    import submitit

    from benchflow.config import ConfigError, composing, validate
    from benchflow.sweeps.slurm.request import request_for, submitit_parameters

    job = [f"service={service}", *overrides]
    with composing() as composer:
        spec = validate(composer.compose(job), tuple(job))
        hydra = composer.compose(job, with_hydra=True).hydra
    if spec.driver_cls.server_recipe(spec.service, "HOST", 0) is None:
        raise ConfigError("service", service, "its driver has no server form (runs in process)")
    from omegaconf import OmegaConf

    site = {
        k: OmegaConf.select(hydra, f"launcher.{k}")
        for k in (
            "partition",
            "account",
            "qos",
            "setup",
            "additional_parameters",
            "gpu_gres",
            "python",
        )
    }
    d.mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(exist_ok=True)
    server_id = f"{service}-{uuid.uuid4().hex[:6]}"
    req = request_for(spec)
    derived = submitit_parameters(req, site.get("gpu_gres") or "gpu:{n}")
    ex = submitit.SlurmExecutor(
        folder=d / ".submitit" / "%j", max_num_timeout=0, python=site.get("python")
    )
    extra = (
        dict(OmegaConf.to_container(site["additional_parameters"]) or {})
        if site.get("additional_parameters")
        else {}
    )
    extra.update(derived["sbatch"])
    out, err = str(d / "logs" / "%x_%j.out"), str(d / "logs" / "%x_%j.err")
    extra.update(output=out, error=err)
    params = {k: site[k] for k in ("partition", "account", "qos") if site.get(k)}
    if site.get("setup"):
        params["setup"] = list(site["setup"])
    ex.update_parameters(
        job_name=f"bf-server-{service}",
        time=req.time_min,
        cpus_per_task=req.cpus_per_task,
        additional_parameters=extra,
        srun_args=[*derived["srun_args"], "--output", out, "--error", err],
        **params,
    )
    inst = Instance(server_id, service, None, "starting", submitted_at=time.time())
    inst.save(d)
    sjob = ex.submit(serve, server_id, spec.resolved, host, str(d))
    inst.job_id = sjob.job_id
    inst.save(d)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cur = read_instance(server_id, d)
        if cur is not None and cur.state == "ready":
            return cur
        state = _job_state(sjob.job_id)
        if cur is None or (state and state not in ("PENDING", "RUNNING", "CONFIGURING")):
            break
        time.sleep(0.5)
    # not ready: cancel, and leave nothing behind
    _cancel(sjob.job_id)
    with contextlib.suppress(OSError):
        (d / f"{server_id}.json").unlink()
    inst.state, inst.error = "failed", f"not ready after {timeout_s:.0f} s (job {sjob.job_id})"
    return inst


def _job_state(job_id: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", job_id], capture_output=True, text=True)
    if out.returncode != 0:  # purged from the controller: long gone
        return "GONE" if "Invalid job id" in out.stderr else None
    return out.stdout.strip() or "GONE"


def _cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True)


def ps(d: Path) -> list[tuple[Instance, str]]:
    """Running instances and their Slurm state; records of jobs that are gone are removed."""
    out = []
    for path in sorted(d.glob("*.json")):
        try:
            inst = Instance.load(path)
        except (OSError, ValueError, TypeError):
            continue
        state = _job_state(inst.job_id) if inst.job_id else "PENDING"
        if state == "GONE":  # the job ended without cleaning up (SIGKILL): do it now
            path.unlink(missing_ok=True)
            shutil.rmtree(d / inst.id, ignore_errors=True)
            continue
        out.append((inst, state or "?"))
    return out


def check(server_id: str, d: Path, timeout_s: float) -> tuple[bool, str]:
    """Ready within ``timeout_s``: HTTP 200 on the health path, or a TCP connect."""
    from urllib.parse import urlsplit

    from benchflow.sut.servers import http_ready, tcp_ready

    deadline = time.monotonic() + timeout_s
    while True:
        inst = read_instance(server_id, d)
        if inst is None:
            return False, f"no server {server_id} (see benchflow servers ps)"
        if inst.state == "ready" and inst.endpoint:
            u = urlsplit(inst.endpoint)
            ok = (
                http_ready(u.hostname, u.port)
                if u.scheme.startswith("http")
                else tcp_ready(u.hostname, u.port)
            )
            if ok:
                return True, inst.endpoint
        if time.monotonic() >= deadline:
            return False, f"{server_id} not ready after {timeout_s:g} s (state {inst.state})"
        time.sleep(0.5)


def stop(server_id: str, d: Path, timeout_s: float = 60) -> bool:
    """Cancel the server's job and wait until its record is gone."""
    inst = read_instance(server_id, d)
    if inst is None:
        return False
    if inst.job_id:
        _cancel(inst.job_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _job_state(inst.job_id) if inst.job_id else "GONE"
        if state == "GONE" and not (d / f"{server_id}.json").exists():
            break
        if state == "GONE":  # it never ran, or was killed before cleaning up
            (d / f"{server_id}.json").unlink(missing_ok=True)
            shutil.rmtree(d / server_id, ignore_errors=True)
            break
        time.sleep(0.3)
    return True
