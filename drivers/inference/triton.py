"""``triton``: Triton Inference Server (KServe v2) through tritonclient, HTTP or gRPC.

One request = one ``infer`` call on ``service.model`` (``model_version``) whose
inputs are built from the model's metadata: the batch axis is ``batch`` (the
model must batch, ``max_batch_size`` ≥ ``batch``), other dynamic dimensions come
from ``service.inputs.<name>.shape``, the dtype from the metadata (or
``inputs.<name>.dtype``), the data from the seed (``random``; a few distinct
batches are cycled through) or a ``.npy`` file (``file``). ``zeros`` is refused:
all-zero tensors flatter compression and sparse kernels.

Over HTTP, each variant's request is built once by tritonclient and sent on one
keep-alive connection per worker (:mod:`drivers.inference.triton_http`); over gRPC,
tritonclient's asyncio client sends it.

``shared_memory=system`` passes inputs and outputs through POSIX shared memory
regions registered with the server (client and server on one host), as
perf_analyzer's ``--shared-memory system`` does.

Throughput is items/s (batch × requests, perf_analyzer's "infer/sec");
``rates.requests_per_s`` is inference requests/s. Triton's own per-model
statistics are differenced over the measured window (``extra.triton.*``):
requests, executions, items per execution (the dynamic batcher at work), and
the mean queue, compute-input, compute-infer and compute-output times per
request — where the time goes on the server.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from benchflow.sut.servers import free_port
from drivers.base import ConfigRefused, Driver, DriverError, ServiceSettings
from drivers.inference import launchers
from drivers.inference.launchers import ContainerSettings, PytritonOptions
from drivers.inference.server_metrics import scrape
from drivers.inference.triton_http import InferConnection, build_request

log = logging.getLogger("benchflow.drivers.triton")

STAT_PARTS = ("queue", "compute_input", "compute_infer", "compute_output")


class InputSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[int] | None = Field(None, description="dims without the batch axis")
    dtype: str | None = Field(None, description="Triton datatype, e.g. FP32 (default: metadata)")
    data: Literal["random", "zeros", "file"] | None = None
    file: str | None = Field(None, description="data=file: a .npy of one item or of N items")
    low: float = 0.0
    high: float = 1.0


class TritonSettings(ServiceSettings):
    endpoint: str | None = Field(None, description="mode=server: host:port of HTTP or gRPC")
    protocol: Literal["http", "grpc"] = "http"
    model: str = Field(..., min_length=1)
    model_version: str = ""
    inputs: dict[str, InputSettings] = Field(default_factory=dict)
    data: Literal["random", "zeros", "file"] = "random"
    variants: int = Field(8, ge=1, description="distinct random batches cycled through")
    outputs: list[str] | None = Field(None, description="outputs to request (default: all)")
    shared_memory: Literal["none", "system"] = "none"
    statistics: bool = True
    launcher: Literal["tritonserver", "pytriton"] | None = None
    model_repository: str | None = None
    engine: dict[str, Any] = Field(default_factory=dict, description="launcher flags/options")
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    ready_timeout_s: float = Field(300, gt=0)
    request_timeout_s: float = Field(60, gt=0)


@dataclass
class _Tensor:
    name: str
    datatype: str
    dims: list[int]  # without the batch axis


@dataclass
class _Worker:
    client: Any  # tritonclient's asyncio client: gRPC requests, shared memory (else None)
    variants: list[tuple]  # per distinct batch: (inputs, outputs), or HTTP (request, outputs)
    regions: list[tuple[str, Any]]  # shared memory (name, handle)
    http: InferConnection | None = None  # HTTP: the connection measured requests go on


def _mod(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    return mod


class TritonDriver(Driver):
    name = "triton"
    family = "inference"
    description = "Triton Inference Server via tritonclient (HTTP/gRPC): infer/s, server stats"
    Settings = TritonSettings
    batch_meaning = "the batch dimension of every input"
    size_unit = "items"
    throughput_basis = "size"
    client_library = "tritonclient"

    settings: TritonSettings

    @classmethod
    def check(cls, settings: TritonSettings, run) -> None:
        super().check(settings, run)
        s = settings
        if s.mode == "server" and not s.endpoint:
            raise ConfigRefused("service.endpoint", None, "mode=server needs host:port")
        if s.mode == "embedded" and s.launcher is None:
            raise ConfigRefused(
                "service.launcher", None, "mode=embedded needs tritonserver or pytriton"
            )
        if s.mode == "embedded" and s.launcher == "tritonserver" and not s.model_repository:
            raise ConfigRefused(
                "service.model_repository", None, "launcher=tritonserver needs a model repository"
            )
        if s.launcher == "pytriton":
            try:
                PytritonOptions.model_validate(s.engine)
            except Exception as exc:
                raise ConfigRefused(
                    "service.engine",
                    s.engine,
                    f"pytriton options: {', '.join(PytritonOptions.model_fields)} ({exc})",
                ) from None
        for key, data in [("service.data", s.data)] + [
            (f"service.inputs.{n}.data", i.data) for n, i in s.inputs.items()
        ]:
            if data == "zeros":
                raise ConfigRefused(
                    key, "zeros", "refused (zeros flatter the server); use random or file"
                )
        for n, i in s.inputs.items():
            if (i.data or s.data) == "file" and not i.file:
                raise ConfigRefused(f"service.inputs.{n}.file", None, "data=file needs a .npy")
            if i.file and not Path(i.file).expanduser().is_file():
                raise ConfigRefused(f"service.inputs.{n}.file", i.file, "no such file")
        if s.data == "file" and not s.inputs:
            raise ConfigRefused("service.inputs", {}, "data=file needs inputs.<name>.file")

    def __init__(self, settings: TritonSettings, trial) -> None:
        super().__init__(settings, trial)
        self.server = None
        self.url = ""
        self._metrics_url: str | None = None  # a launched server's metrics port
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []
        self.max_batch_size = 0
        self.data: list[dict[str, np.ndarray]] = []
        self._stats_before: dict | None = None
        self._workspace: tempfile.TemporaryDirectory | None = None
        self._shm_seq = 0
        self._lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        if s.mode == "server":
            self.url = s.endpoint.split("://", 1)[-1].rstrip("/")
        else:
            self._launch()
        with self.trial.phase("model") as fig:
            self._read_model()
            fig["max_batch_size"] = self.max_batch_size
        with self.trial.phase("data") as fig:
            self.data = self._make_data()
            fig["bytes_per_request"] = sum(a.nbytes for a in self.data[0].values())

    def _launch(self) -> None:
        s = self.settings
        http, grpc, metrics = free_port(), free_port(), free_port()
        self.url = f"127.0.0.1:{grpc if s.protocol == 'grpc' else http}"
        self._metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        if s.launcher == "pytriton":
            self._workspace = tempfile.TemporaryDirectory(prefix="bf-pytriton-")
            launch = launchers.pytriton(
                s.model,
                http,
                grpc,
                metrics,
                PytritonOptions.model_validate(s.engine),
                self.trial.run.seed,
                Path(self._workspace.name) / "ws",
            )
        else:
            launch = launchers.tritonserver(s.model_repository, http, grpc, metrics, s.engine)
        control = self._client()

        def ready() -> bool:
            try:
                return bool(
                    control.is_server_ready() and control.is_model_ready(s.model, s.model_version)
                )
            except Exception:
                return False

        with self.trial.phase("server_start"):
            try:
                self.server = launchers.start(
                    launch, self.trial, ready, s.ready_timeout_s, s.container.build(self.trial)
                )
            finally:
                control.close()

    def _client(self, timeout_s: float | None = None):
        mod = _mod(self.settings.protocol)
        t = timeout_s or self.settings.request_timeout_s
        if self.settings.protocol == "grpc":
            return mod.InferenceServerClient(self.url)
        return mod.InferenceServerClient(self.url, connection_timeout=t, network_timeout=t)

    def _read_model(self) -> None:
        s = self.settings
        from tritonclient.utils import InferenceServerException

        c = self._client(30)
        try:
            try:
                meta = self._json(c.get_model_metadata(s.model, s.model_version, **self._aj()))
                cfg = self._json(c.get_model_config(s.model, s.model_version, **self._aj()))
            except InferenceServerException as exc:
                if "UNAVAILABLE" in str(exc.status() or ""):
                    raise DriverError(
                        f"no Triton server answers at {self.url} over {s.protocol}: "
                        f"{exc.message()}",
                        "connection_refused",
                    ) from None
                raise DriverError(
                    f"service.model = {s.model!r} (version {s.model_version or 'latest'!r}) is "
                    f"not available on {self.url}: {exc.message()}",
                    "unknown_model",
                ) from None
            except Exception as exc:
                raise DriverError(
                    f"no Triton server answers at {self.url} over {s.protocol}: {exc}",
                    "connection_refused",
                ) from None
        finally:
            c.close()
        cfg = cfg.get("config", cfg)
        self.max_batch_size = int(cfg.get("max_batch_size", 0))
        batched = self.max_batch_size > 0
        batch = self.trial.run.batch
        if not batched and batch > 1:
            raise DriverError(
                f"batch = {batch}: model {s.model} does not batch (max_batch_size 0); use batch=1",
                "config_refused",
            )
        if batched and batch > self.max_batch_size:
            raise DriverError(
                f"batch = {batch}: above the model's max_batch_size {self.max_batch_size}",
                "config_refused",
            )

        def tensors(items) -> list[_Tensor]:
            out = []
            for t in items:
                shape = [int(d) for d in t["shape"]]
                out.append(_Tensor(t["name"], t["datatype"], shape[1:] if batched else shape))
            return out

        self.inputs, self.outputs = tensors(meta["inputs"]), tensors(meta["outputs"])
        unknown = set(s.inputs) - {t.name for t in self.inputs}
        if unknown:
            raise DriverError(
                f"service.inputs names {sorted(unknown)}; model {s.model} has inputs "
                f"{[t.name for t in self.inputs]}",
                "config_refused",
            )
        if s.outputs is not None:
            names = {t.name for t in self.outputs}
            missing = [o for o in s.outputs if o not in names]
            if missing:
                raise DriverError(
                    f"service.outputs names {missing}; model {s.model} has outputs {sorted(names)}",
                    "config_refused",
                )
            self.outputs = [t for t in self.outputs if t.name in s.outputs]
        for t in self.inputs:
            spec = s.inputs.get(t.name)
            if spec and spec.dtype:
                t.datatype = spec.dtype
            if spec and spec.shape is not None:
                if len(spec.shape) != len(t.dims) or any(
                    d != -1 and d != w for d, w in zip(t.dims, spec.shape, strict=True)
                ):
                    raise DriverError(
                        f"service.inputs.{t.name}.shape = {spec.shape}: the model's is {t.dims}",
                        "config_refused",
                    )
                t.dims = list(spec.shape)
            if any(d < 0 for d in t.dims):
                raise DriverError(
                    f"input {t.name} has dynamic dims {t.dims}: set service.inputs.{t.name}.shape",
                    "config_refused",
                )
        if s.shared_memory == "system":
            bad = [t.name for t in self.outputs if any(d < 0 for d in t.dims)]
            bad += [t.name for t in self.inputs + self.outputs if t.datatype == "BYTES"]
            if bad:
                raise DriverError(
                    f"shared_memory=system needs fixed-size outputs and no BYTES tensors: {bad}",
                    "config_refused",
                )

    def _aj(self) -> dict:
        return {"as_json": True} if self.settings.protocol == "grpc" else {}

    @staticmethod
    def _json(obj) -> dict:
        return obj if isinstance(obj, dict) else dict(obj)

    def _make_data(self) -> list[dict[str, np.ndarray]]:
        from tritonclient.utils import triton_to_np_dtype

        s, batch = self.settings, self.trial.run.batch
        rng = np.random.default_rng([self.trial.run.seed, 0x7217])
        lead = [batch] if self.max_batch_size > 0 else []
        variants = []
        files: dict[str, np.ndarray] = {}
        for t in self.inputs:
            spec = s.inputs.get(t.name) or InputSettings()
            if (spec.data or s.data) == "file":
                files[t.name] = np.load(Path(spec.file).expanduser(), allow_pickle=False)
        for v in range(s.variants):
            arrays = {}
            for t in self.inputs:
                spec = s.inputs.get(t.name) or InputSettings()
                shape = lead + t.dims
                if t.name in files:
                    arrays[t.name] = _from_file(files[t.name], t, shape, v, batch)
                    continue
                if t.datatype == "BYTES":
                    words = rng.integers(0, 26, size=(*shape, 16)) + ord("a")
                    arr = np.array(
                        [bytes(w.astype(np.uint8)) for w in words.reshape(-1, 16)], dtype=object
                    ).reshape(shape)
                else:
                    dtype = triton_to_np_dtype(t.datatype)
                    if dtype is None:
                        raise DriverError(
                            f"input {t.name}: datatype {t.datatype}", "config_refused"
                        )
                    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                        arr = rng.integers(
                            int(spec.low), max(int(spec.high), int(spec.low) + 2), size=shape
                        ).astype(dtype)
                    else:
                        arr = rng.uniform(spec.low, spec.high, size=shape).astype(dtype)
                arrays[t.name] = arr
            variants.append(arrays)
        return variants

    # -- workers --------------------------------------------------------------------
    # Requests run on the engine's one event loop: gRPC through tritonclient's asyncio
    # client, HTTP as requests tritonclient builds once, sent on a lean keep-alive
    # connection (triton_http.py says why).
    def _aclient(self):
        s = self.settings
        if s.protocol == "grpc":
            import tritonclient.grpc.aio as aio

            return aio.InferenceServerClient(self.url)
        import tritonclient.http.aio as aio

        return aio.InferenceServerClient(self.url, conn_limit=1, conn_timeout=s.request_timeout_s)

    async def open_worker(self, worker: int) -> _Worker:
        s = self.settings
        mod = _mod(s.protocol)
        # Over HTTP the asyncio client only registers shared memory: none without it.
        client = self._aclient() if s.protocol == "grpc" or s.shared_memory == "system" else None
        regions: list[tuple[str, Any]] = []
        variants = []
        if s.shared_memory == "system":
            variants.append(await self._shm_variant(mod, client, worker, regions))
        else:
            for v in range(len(self.data)):
                arrays = self.data[(worker + v) % len(self.data)]
                ins = []
                for t in self.inputs:
                    i = mod.InferInput(t.name, list(arrays[t.name].shape), t.datatype)
                    if s.protocol == "http":
                        i.set_data_from_numpy(arrays[t.name], binary_data=True)
                    else:
                        i.set_data_from_numpy(arrays[t.name])
                    ins.append(i)
                outs = [self._requested(mod, t.name) for t in self.outputs]
                variants.append((ins, outs))
        if s.protocol == "grpc":
            return _Worker(client, variants, regions)
        host, _, port = self.url.rpartition(":")
        requests = [
            build_request(self.url, s.model, s.model_version, ins, outs) for ins, outs in variants
        ]
        return _Worker(
            client, requests, regions, InferConnection(host, int(port), s.request_timeout_s)
        )

    def _requested(self, mod, name: str):
        if self.settings.protocol == "http":
            return mod.InferRequestedOutput(name, binary_data=True)
        return mod.InferRequestedOutput(name)

    async def _shm_variant(self, mod, client, worker: int, regions: list) -> tuple[list, list]:
        import tritonclient.utils.shared_memory as shm
        from tritonclient.utils import triton_to_np_dtype

        arrays = self.data[worker % len(self.data)]
        lead = [self.trial.run.batch] if self.max_batch_size > 0 else []
        with self._lock:
            self._shm_seq += 1
            tag = f"bf{os.getpid()}_{self._shm_seq}"
        in_bytes = sum(arrays[t.name].nbytes for t in self.inputs)
        out_sizes = [
            int(np.prod(lead + t.dims)) * np.dtype(triton_to_np_dtype(t.datatype)).itemsize
            for t in self.outputs
        ]
        out_bytes = max(1, sum(out_sizes))
        h_in = shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", in_bytes)
        regions.append((f"{tag}_in", h_in))
        h_out = shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out", out_bytes)
        regions.append((f"{tag}_out", h_out))
        shm.set_shared_memory_region(h_in, [arrays[t.name] for t in self.inputs])
        await client.register_system_shared_memory(f"{tag}_in", f"/{tag}_in", in_bytes)
        await client.register_system_shared_memory(f"{tag}_out", f"/{tag}_out", out_bytes)
        ins, offset = [], 0
        for t in self.inputs:
            a = arrays[t.name]
            i = mod.InferInput(t.name, list(a.shape), t.datatype)
            i.set_shared_memory(f"{tag}_in", a.nbytes, offset)
            offset += a.nbytes
            ins.append(i)
        outs, offset = [], 0
        for t, size in zip(self.outputs, out_sizes, strict=True):
            o = self._requested(mod, t.name)
            o.set_shared_memory(f"{tag}_out", size, offset)
            offset += size
            outs.append(o)
        return ins, outs

    async def close_worker(self, state: _Worker) -> None:
        if state is None:
            return
        import tritonclient.utils.shared_memory as shm

        for name, handle in state.regions:
            try:
                await state.client.unregister_system_shared_memory(name)
            except Exception as exc:  # the server may be gone already
                log.debug("unregister %s: %s", name, exc)
            try:
                shm.destroy_shared_memory_region(handle)
            except Exception as exc:
                log.debug("destroy %s: %s", name, exc)
        if state.http is not None:
            state.http.close()
        if state.client is not None:
            await state.client.close()

    async def operation(self, ctx) -> int:
        w: _Worker = ctx.state
        if w.http is not None:
            await w.http.infer(*w.variants[ctx.seq % len(w.variants)])
            return self.trial.run.batch
        ins, outs = w.variants[ctx.seq % len(w.variants)]
        s = self.settings
        await w.client.infer(
            s.model,
            ins,
            model_version=s.model_version,
            outputs=outs,
            client_timeout=s.request_timeout_s,
        )
        return self.trial.run.batch

    def classify_error(self, exc: BaseException) -> str:
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, InferenceServerException):
            status = str(exc.status() or "")
            msg = (exc.message() or "").lower()
            if "deadline" in status.lower() or "timed out" in msg or "timeout" in msg:
                return "timeout"
            if "unavailable" in status.lower():
                return "connection_refused" if "refused" in msg else "unavailable"
            if status.isdigit():
                return f"http_{status}"
            if status.startswith("StatusCode."):
                return "grpc_" + status.split(".", 1)[1].lower()
            return "server_error"
        if isinstance(exc, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(exc, ConnectionError | EOFError):
            return "connection_lost"
        return super().classify_error(exc)

    # -- the measured window: Triton's own statistics --------------------------------
    def _stats(self) -> dict | None:
        s = self.settings
        if not s.statistics:
            return None
        c = self._client(10)
        try:
            raw = self._json(c.get_inference_statistics(s.model, s.model_version, **self._aj()))
        except Exception as exc:  # e.g. 403 where the endpoint is restricted
            log.warning("Triton statistics unavailable: %s", exc)
            self.trial.notes.append(f"Triton statistics unavailable: {str(exc)[:200]}")
            return None
        finally:
            c.close()
        stats = raw.get("model_stats") or []
        return stats[0] if stats else None

    def server_sample(self) -> dict[str, float]:
        """Triton's Prometheus gauges (``nv_*``: requests pending, GPU and CPU use) from
        the metrics port of a server this trial launched; none for a server of yours."""
        url = getattr(self, "_metrics_url", None)
        if url is None:
            return {}
        snap = scrape(url, "nv_", timeout_s=2.0)
        return {name[3:]: v for name, (kind, v) in snap.items() if kind == "gauge"}

    def measure_start(self) -> None:
        self._stats_before = self._stats()

    def measure_end(self) -> dict[str, float]:
        before = self._stats_before
        self._stats_before = None
        after = self._stats() if before is not None else None
        if before is None or after is None:
            return {}
        return stats_delta(before, after)

    def sut_pids(self) -> list[int]:
        return [self.server.pid] if self.server else []

    def teardown(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self._workspace is not None:
            self._workspace.cleanup()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["server"] = None
        state["_workspace"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _from_file(a: np.ndarray, t: _Tensor, shape: list[int], v: int, batch: int) -> np.ndarray:
    """One batch from a .npy: a single item (tiled) or N items (taken in turn)."""
    item = tuple(t.dims)
    if tuple(a.shape) == item:
        return np.broadcast_to(a, shape).copy()
    if tuple(a.shape[1:]) == item and len(a) > 0:
        idx = (np.arange(batch) + v * batch) % len(a)
        return a[idx].reshape(shape)
    raise DriverError(
        f"input {t.name}: the file holds shape {list(a.shape)}; expected {list(item)} "
        f"(one item) or [N, {', '.join(map(str, item))}]",
        "bad_dataset",
    )


def _num(x) -> float:
    return float(x or 0)  # gRPC's JSON gives 64-bit counters as strings


def stats_delta(before: dict, after: dict) -> dict[str, float]:
    """Triton's per-model statistics over the window: counts and mean µs per request."""
    out: dict[str, float] = {}
    inf = _num(after.get("inference_count")) - _num(before.get("inference_count"))
    exe = _num(after.get("execution_count")) - _num(before.get("execution_count"))
    out["triton.inference_count"] = inf
    out["triton.execution_count"] = exe
    if exe > 0:
        out["triton.items_per_execution"] = inf / exe
    a, b = after.get("inference_stats", {}), before.get("inference_stats", {})

    def d(part: str, key: str) -> float:
        return _num(a.get(part, {}).get(key)) - _num(b.get(part, {}).get(key))

    ok = d("success", "count")
    out["triton.requests"] = ok
    out["triton.failed"] = d("fail", "count")
    if ok > 0:
        out["triton.request_us"] = d("success", "ns") / ok / 1e3
    for part in STAT_PARTS:
        n = d(part, "count")
        if n > 0:
            out[f"triton.{part}_us"] = d(part, "ns") / n / 1e3
    return out
