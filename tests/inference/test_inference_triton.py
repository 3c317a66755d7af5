"""The ``triton`` driver against a real Triton server (PyTriton's, the CPU stand-in),
through ``python -m benchflow``: HTTP and gRPC, system shared memory, the batch
dimension, Triton's statistics over the window, data from a file, and the
failures (zeros, unknown model, batch above max_batch_size, never ready, an error
reply, a timeout, the server killed mid-trial)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import FAST
from test_inference_openai import NO_MLFLOW, group_gone, launched_pid, one_trial


def server_mode(srv, protocol: str = "http", *extra: str) -> list[str]:
    endpoint = srv.grpc if protocol == "grpc" else srv.http
    return [
        "service=pytriton",
        "service.mode=server",
        f"service.endpoint={endpoint}",
        f"service.protocol={protocol}",
        *extra,
    ]


@pytest.mark.parametrize(
    ("protocol", "shm"),
    [("http", "none"), ("grpc", "none"), ("http", "system"), ("grpc", "system")],
)
def test_protocols_and_shared_memory_with_server_statistics(
    workdir, pytriton_server, protocol, shm
):
    _, tdir, meta = one_trial(
        workdir,
        *server_mode(pytriton_server, protocol, f"service.shared_memory={shm}"),
        "concurrency=2",
        *FAST,
        *NO_MLFLOW,
    )
    assert meta["status"] == "finished", meta.get("error")
    m = workdir.metrics(tdir)
    assert m["errors"]["count"] == 0 and m["latency_ms"]["count"] > 0
    assert m["throughput"]["unit"] == "items_per_s"
    assert m["rates"]["items_per_s"] == pytest.approx(m["rates"]["requests_per_s"], rel=0.01)
    x = m["extra"]
    # Triton's own counters over the window: at least the requests measured (the
    # snapshots are taken just outside the window, so a request in flight may add).
    assert x["triton.requests"] >= m["latency_ms"]["count"]
    assert x["triton.requests"] <= m["latency_ms"]["count"] + 2
    assert x["triton.failed"] == 0
    for part in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert x[f"triton.{part}_us"] > 0
    assert x["triton.request_us"] >= x["triton.compute_infer_us"]


def test_batch_is_the_batch_dimension(workdir, pytriton_server):
    _, tdir, meta = one_trial(
        workdir, *server_mode(pytriton_server), "batch=4", *FAST, "tracking.upload=true"
    )
    assert meta["status"] == "finished", meta.get("error")
    m = workdir.metrics(tdir)
    assert m["rates"]["items_per_s"] == pytest.approx(4 * m["rates"]["requests_per_s"], rel=0.01)
    assert m["extra"]["triton.inference_count"] == 4 * m["extra"]["triton.requests"]
    assert m["phases"]["data"]["bytes_per_request"] == 4 * 64 * 4
    runs = workdir.runs()
    assert runs["metrics.extra.triton.compute_infer_us"].iloc[0] > 0


def test_data_from_a_file(workdir, pytriton_server, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(1).random((10, 64), dtype=np.float32))
    _, tdir, meta = one_trial(
        workdir,
        *server_mode(
            pytriton_server, "grpc", "service.data=file", f"+service.inputs.x.file={path}"
        ),
        "batch=3",
        *FAST,
        *NO_MLFLOW,
    )
    assert meta["status"] == "finished", meta.get("error")
    assert workdir.metrics(tdir)["errors"]["count"] == 0


def test_zeros_are_refused(workdir):
    proc = workdir.run("service=pytriton", "service.data=zeros", *NO_MLFLOW)
    assert proc.returncode == 2
    assert "service.data = 'zeros'" in proc.stderr and "use random or file" in proc.stderr


def test_unknown_model_and_oversized_batch(workdir, pytriton_server):
    proc, _, meta = one_trial(
        workdir,
        *server_mode(pytriton_server, "http", "service.model=resnet9000"),
        *FAST,
        *NO_MLFLOW,
        check=False,
    )
    assert proc.returncode == 1 and meta["error"]["class"] == "unknown_model"
    assert "'resnet9000'" in meta["error"]["message"]
    proc, _, meta = one_trial(
        workdir,
        *server_mode(pytriton_server),
        "batch=65",
        *FAST,
        *NO_MLFLOW,
        check=False,
        scenario="big",
    )
    assert proc.returncode == 1
    assert "above the model's max_batch_size 64" in meta["error"]["message"]


def test_embedded_pytriton_launch_and_teardown(workdir):
    """The harness launches PyTriton (its own environment), measures, and stops it with
    SIGINT: the whole process group (tritonserver included) is gone afterwards."""
    _, tdir, meta = one_trial(
        workdir,
        "service=pytriton",
        "service.engine.max_batch_size=8",
        "batch=2",
        *FAST,
        *NO_MLFLOW,
    )
    assert meta["status"] == "finished", meta.get("error")
    m = workdir.metrics(tdir)
    assert m["errors"]["count"] == 0 and m["resource"]["scope"] == "sut_process"
    assert (tdir / "logs" / "pytriton.err").exists()
    assert group_gone(launched_pid(tdir, "pytriton"))
    # the server's side as series: Triton's own gauges from its metrics port
    header = (tdir / "server.csv").read_text().splitlines()[0].split(",")
    assert any(h.startswith("inference_pending_request_count") for h in header), header


def test_triton_that_never_becomes_ready_fails_cleanly(workdir):
    proc, tdir, meta = one_trial(
        workdir,
        "service=pytriton",
        "service.ready_timeout_s=0.5",
        *FAST,
        *NO_MLFLOW,
        check=False,
    )
    assert proc.returncode == 1 and meta["error"]["class"] == "server_not_ready"
    assert group_gone(launched_pid(tdir, "pytriton"))


def test_prometheus_metrics_differenced_over_a_window(pytriton_server):
    """The /metrics watcher the vllm recipe uses, on a real Prometheus endpoint
    (Triton's): counters differenced over the window, gauges summarised."""
    import tritonclient.http as th

    from drivers.inference.server_metrics import MetricsWatch

    watch = MetricsWatch(f"http://{pytriton_server.metrics}/metrics", "nv_", interval_s=0.2)
    watch.start()
    client = th.InferenceServerClient(pytriton_server.http)
    x = th.InferInput("x", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    for _ in range(7):
        client.infer("matmul", [x])
    client.close()
    out = watch.stop()
    assert watch.failures == 0
    assert out["server.inference_request_success_total.delta"] == 7
    assert out["server.inference_count_total.delta"] == 7


def test_http_error_reply_timeout_and_reconnect_on_the_real_server(pytriton_server):
    """The driver's own HTTP connection (triton_http.py) against the real server: a
    request Triton rejects (an input the model does not have) raises tritonclient's
    InferenceServerException with the HTTP status and Triton's message, and the
    connection stays usable; a request past its timeout raises TimeoutError and the
    next one reconnects and succeeds."""
    import asyncio

    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    from drivers.inference.triton_http import InferConnection, build_request

    def request(name: str) -> tuple[bytes, list[str]]:
        i = th.InferInput(name, [1, pytriton_server.dim], "FP32")
        i.set_data_from_numpy(np.ones((1, pytriton_server.dim), np.float32), binary_data=True)
        out = th.InferRequestedOutput("y", binary_data=True)
        return build_request(pytriton_server.http, pytriton_server.model, "", [i], [out])

    async def scenario() -> InferenceServerException:
        host, _, port = pytriton_server.http.rpartition(":")
        conn = InferConnection(host, int(port), 10)
        with pytest.raises(InferenceServerException) as rejected:
            await conn.infer(*request("not_an_input"))
        await conn.infer(*request("x"))  # the same connection, after an error reply
        conn.timeout_s = 1e-5
        with pytest.raises(TimeoutError):
            await conn.infer(*request("x"))
        conn.timeout_s = 10
        await conn.infer(*request("x"))  # a fresh connection
        conn.close()
        return rejected.value

    err = asyncio.run(scenario())
    assert err.status() == "400"
    assert "not_an_input" in err.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_killed_mid_trial_counts_errors_and_invalidates(workdir, tmp_path, protocol):
    """Kill a Triton server (its whole process group) once the trial's 5 s measured
    phase has made 20 inferences (Triton's own count): the requests after it are
    counted errors (connection lost / refused / unavailable), the trial is invalid,
    nothing hangs."""
    import tritonclient.http as th
    from fixtures.pytriton import pytriton_available, start_pytriton

    assert pytriton_available()
    server, http, grpc, _ = start_pytriton(tmp_path / "logs")
    stop = threading.Event()

    def kill_once_measuring() -> None:
        # A fixed delay is not enough: a busy CI machine can still be in set-up.
        control = th.InferenceServerClient(http)
        while not stop.wait(0.05):
            try:
                stats = control.get_inference_statistics("matmul")["model_stats"][0]
            except Exception:
                continue
            if int(stats["inference_count"]) >= 20:
                os.killpg(server.pid, signal.SIGKILL)
                return

    killer = threading.Thread(target=kill_once_measuring, daemon=True)
    try:
        killer.start()
        t0 = time.monotonic()
        _, tdir, meta = one_trial(
            workdir,
            "service=pytriton",
            "service.mode=server",
            f"service.endpoint={grpc if protocol == 'grpc' else http}",
            f"service.protocol={protocol}",
            "service.request_timeout_s=5",
            "service.statistics=false",
            "duration_s=5",
            "warmup_s=0",
            "stall_timeout_s=30",
            *NO_MLFLOW,
        )
        assert time.monotonic() - t0 < 90
    finally:
        stop.set()
        server.stop()
    assert group_gone(server.pid)
    m = workdir.metrics(tdir)
    assert meta["status"] == "finished", meta.get("error")
    assert m["latency_ms"]["count"] > 0 and m["errors"]["count"] > 0
    assert set(m["errors"]["by_class"]) <= {
        "connection_lost",
        "connection_refused",
        "unavailable",
        "grpc_unavailable",
    }, m["errors"]["by_class"]
    assert not m["validity"]["valid"]
    assert any("error rate" in r for r in m["validity"]["reasons"])
