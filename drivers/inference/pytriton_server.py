"""The ``pytriton`` stand-in: a real Triton server (bundled in nvidia-pytriton) serving a
small matmul model with dynamic batching, on the CPU.

Runs in its own Python environment (nvidia-pytriton pins numpy<2 and
tritonclient~=2.50, which the harness's environment cannot hold), so this file
imports nothing from benchflow: the harness launches it by path::

    PYTHON pytriton_server.py --http-port P --grpc-port Q --metrics-port R

Model ``matmul`` (version 1): input ``x`` FP32 ``[-1, dim]`` (the first axis is
the batch axis), output ``y = tanh(x @ W)`` FP32 ``[-1, dim]`` with ``W`` drawn from
``--seed``; ``--work`` extra matmuls per call make the compute heavier.
Stop it with SIGINT (RECIPES.md: SIGTERM orphans ``tritonserver``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def make_infer(dim: int, seed: int, work: int):
    """The inference callable: one batched matmul (plus ``work`` more)."""
    w = np.random.default_rng(seed).standard_normal((dim, dim), dtype=np.float32) / np.sqrt(dim)

    @batch
    def infer(x: np.ndarray):
        y = x @ w
        for _ in range(work):
            y = np.tanh(y) @ w
        return {"y": np.tanh(y).astype(np.float32)}

    return infer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--model", default="matmul")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--queue-delay-us", type=int, default=100)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--work", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # A launcher that ignored SIGINT (a shell's `&`) must not stop us from stopping.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    # The statistics and shared-memory endpoints are restricted by default (403);
    # the harness needs both. The rest stay behind PyTriton's generated token.
    security = TritonSecurityConfig(restricted_endpoints=["model-repository", "trace", "logging"])
    infer = make_infer(args.dim, args.seed, args.work)
    with Triton(config=config, security_config=security, workspace=args.workspace) as triton:
        triton.bind(
            model_name=args.model,
            infer_func=[infer] * args.instances,
            inputs=[Tensor(name="x", dtype=np.float32, shape=(args.dim,))],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(args.dim,))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
        )
        print(f"serving {args.model} on http://127.0.0.1:{args.http_port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT: stop cleanly
            triton.serve()


if __name__ == "__main__":
    main()
