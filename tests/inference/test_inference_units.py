"""The parts of the inference drivers that need no server: command lines (vLLM,
tritonserver, Apptainer — none of them can run here), engine-arg flags, image
digests, Triton statistics differencing, prompts and dataset parsing."""

from __future__ import annotations

import hashlib
import json
import re
import signal
from pathlib import Path

import pytest

from benchflow.sut.servers import Container, ServerFailed, ServerProcess, image_digest
from drivers.base import DriverError, RunSettings, TrialContext
from drivers.inference import launchers, prompts
from drivers.inference.triton import stats_delta


def test_vllm_command_line_with_engine_args():
    launch = launchers.vllm(
        "Qwen/Qwen2.5-0.5B-Instruct",
        "127.0.0.1",
        8123,
        None,
        {
            "tensor_parallel_size": 2,
            "max_model_len": 4096,
            "dtype": "bfloat16",
            "enable_prefix_caching": False,
            "enforce_eager": True,
            "kv_cache_dtype": None,
            "override_generation_config": {"temperature": 0},
        },
    )
    assert launch.cmd == [
        "vllm",
        "serve",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "4096",
        "--dtype",
        "bfloat16",
        "--no-enable-prefix-caching",
        "--enforce-eager",
        "--override-generation-config",
        '{"temperature":0}',
    ]
    assert launch.stop_signal == signal.SIGTERM


def test_vllm_inside_apptainer_command_line(tmp_path):
    """What `service=vllm service.container.image=...` runs on a GPU node."""
    settings = launchers.ContainerSettings(image="/images/vllm.sif", env={"HF_HOME": "/data/hf"})
    trial = TrialContext(
        "t", RunSettings(1, 1, 1, 0, None), tmp_path / "results" / "s" / "t", tmp_path / "data"
    )
    container = settings.build(trial)
    cmd = container.command(launchers.vllm("m", "127.0.0.1", 8000, "served", {"dtype": "auto"}).cmd)
    assert cmd == [
        "apptainer",
        "exec",
        "--nv",
        "-B",
        str((tmp_path / "data").resolve()),
        "-B",
        str((tmp_path / "results").resolve()),
        "--env",
        "HF_HOME=/data/hf",
        "/images/vllm.sif",
        "vllm",
        "serve",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        "served",
        "--dtype",
        "auto",
    ]


def test_tritonserver_command_line():
    launch = launchers.tritonserver(
        "/models", 8000, 8001, 8002, {"strict_readiness": True, "model_control_mode": "none"}
    )
    assert launch.cmd == [
        "tritonserver",
        "--model-repository=/models",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--strict-readiness=true",
        "--model-control-mode=none",
    ]


def test_llamacpp_command_line_keeps_requests_uninterrupted(tmp_path):
    launch = launchers.llamacpp(tmp_path / "m.gguf", "alias", "127.0.0.1", 9, {"n_threads": 1})
    cmd = launch.cmd
    assert cmd[1:3] == ["-m", "llama_cpp.server"]
    assert cmd[cmd.index("--interrupt_requests") + 1] == "False"
    assert cmd[cmd.index("--n_threads") + 1] == "1"
    assert cmd[cmd.index("--model_alias") + 1] == "alias"


def test_missing_container_runtime_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerFailed, match="'apptainer' is not on PATH"):
        ServerProcess("vllm", ["vllm", "serve", "m"], tmp_path, container=Container("x.sif"))


def test_missing_server_program_is_a_clear_error(tmp_path):
    with pytest.raises(ServerFailed, match="cannot start 'vllm-not-installed'"):
        ServerProcess("vllm", ["vllm-not-installed", "serve"], tmp_path)


def test_image_digest_pinned_reference_and_sif_file(tmp_path):
    d = "sha256:" + "ab" * 32
    assert image_digest(f"docker://vllm/vllm-openai@{d}") == d
    assert image_digest("docker://vllm/vllm-openai:latest") is None
    sif = tmp_path / "x.sif"
    sif.write_bytes(b"image bytes")
    want = "sha256:" + hashlib.sha256(b"image bytes").hexdigest()
    assert image_digest(str(sif)) == want
    assert (tmp_path / "x.sif.sha256").read_text().strip() == want  # cached beside it
    assert image_digest(str(sif)) == want


def test_lock_file_pins_every_image_by_digest():
    lock = Path(__file__).resolve().parents[2] / "containers" / "images.lock"
    lines = [ln.split() for ln in lock.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    names = {name for name, _ in lines}
    assert names == {"vllm", "triton"}
    for _, ref in lines:
        assert image_digest(ref) is not None, ref
    for name in names:
        assert (lock.parent / f"{name}.def").read_text().count("From: {{ base }}") == 1


def test_triton_statistics_differenced_over_the_window():
    def snap(n, queue_ns, infer_ns, execs):
        part = lambda c, ns: {"count": c, "ns": ns}  # noqa: E731
        return {
            "inference_count": n,
            "execution_count": execs,
            "inference_stats": {
                "success": part(n, n * 5000),
                "fail": part(0, 0),
                "queue": part(n, queue_ns),
                "compute_input": part(n, n * 100),
                "compute_infer": part(n, infer_ns),
                "compute_output": part(n, n * 200),
            },
        }

    out = stats_delta(snap(10, 1000, 20000, 10), snap(110, 201000, 420000, 60))
    assert out["triton.requests"] == 100 and out["triton.inference_count"] == 100
    assert out["triton.items_per_execution"] == 2
    assert out["triton.queue_us"] == pytest.approx(2.0)
    assert out["triton.compute_infer_us"] == pytest.approx(4.0)
    assert out["triton.request_us"] == pytest.approx(5.0)
    # gRPC's JSON gives 64-bit counters as strings
    grpc_like = json.loads(json.dumps(snap(110, 201000, 420000, 60)), parse_int=str)
    assert stats_delta(snap(10, 1000, 20000, 10), grpc_like)["triton.queue_us"] == 2.0


def test_synthetic_prompts_vary_and_keep_their_lengths():
    ps = prompts.synthetic(200, 32, 16, 0.0, 0, seed=1, tokenizer=None)
    assert len({p.text.split()[0] + p.text.split()[1] for p in ps}) > 150  # no shared prefixes
    assert all(len(p.text.split()) == 32 and p.output_tokens == 16 for p in ps)
    assert prompts.synthetic(200, 32, 16, 0.0, 0, seed=1, tokenizer=None) == ps  # seeded
    ranged = prompts.synthetic(200, 100, 50, 0.5, 8, seed=2, tokenizer=None)
    assert (
        min(p.input_tokens for p in ranged) >= 8 + 50 and max(p.output_tokens for p in ranged) <= 75
    )
    assert len({" ".join(p.text.split()[:8]) for p in ranged}) == 1  # the shared prefix


def test_synthetic_prompts_exact_token_counts_with_the_gguf_tokenizer(data_dir):
    pytest.importorskip("llama_cpp")
    tok = prompts.load_tokenizer("auto", str(launchers.gguf_model(data_dir)))
    ps = prompts.synthetic(20, 48, 8, 0.0, 0, seed=3, tokenizer=tok)
    assert all(len(tok.encode(p.text)) in (47, 48, 49) for p in ps)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "a list, not an object"),
        ('{"text": "x"}', "keys ['text']"),
        ('{"conversations": [{"from": "gpt", "value": "hi"}]}', "no human/user turn"),
        ('{"prompt": ""}', "'prompt' must be a non-empty string"),
        ('{"prompt": "x", "output_tokens": -3}', "'output_tokens' must be a positive"),
    ],
)
def test_malformed_dataset_lines_name_file_line_and_shapes(tmp_path, line, why):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(DriverError, match=re.escape(why)) as err:
        prompts.dataset(path, 10, 16, "max_tokens", 0, None)
    assert err.value.error_class == "bad_dataset" and f"{path}:2:" in str(err.value)


def test_dataset_output_lengths_from_the_reference():
    class WordTok:
        def encode(self, text):
            return text.split()

        def decode(self, ids):
            return " ".join(ids)

    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write(json.dumps({"prompt": "a b c", "output": "one two three four"}) + "\n")
        f.write(json.dumps({"prompt": "d e", "output_tokens": 99}) + "\n")
    ps = prompts.dataset(f.name, 10, 32, "dataset", 0, WordTok())
    by_prompt = {p.text: p for p in ps}
    assert by_prompt["a b c"].output_tokens == 4 and by_prompt["a b c"].input_tokens == 3
    assert by_prompt["d e"].output_tokens == 32  # clipped to max_tokens
    Path(f.name).unlink()
