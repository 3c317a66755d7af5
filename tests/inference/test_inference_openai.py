"""The ``openai`` driver against a real llama.cpp server (the CPU stand-in for vLLM),
through ``python -m benchflow``: streaming and not, completions and chat, token
counting, goodput, datasets, and the failures (unknown model, malformed dataset,
a server that never becomes ready, a server killed mid-trial)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import threading
import time

import psutil
import pytest
from conftest import FAST

NO_MLFLOW = ["tracking.upload=false", "progress=off"]


def server_mode(srv, *extra: str) -> list[str]:
    return [
        "service=llamacpp",
        "service.mode=server",
        f"service.endpoint={srv.url}",
        f"service.tokenizer={srv.gguf}",
        "service.max_tokens=6",
        "service.prompts.count=40",
        "service.prompts.input_tokens=16",
        *extra,
    ]


def one_trial(workdir, *args, check=True, scenario="adhoc"):
    proc = workdir.run(f"scenario={scenario}", *args, check=check)
    (tdir,) = workdir.trial_dirs(scenario)
    return proc, tdir, workdir.meta(tdir)


def launched_pid(tdir, name: str) -> int:
    """The pid of the server a trial launched (from its log)."""
    text = "\n".join(p.read_text() for p in (tdir / "logs").glob("*") if p.is_file())
    m = re.search(rf"started {name} \(pid (\d+)", text)
    assert m, f"no pid of {name} in the trial's logs"
    return int(m.group(1))


def group_gone(pgid: int, wait_s: float = 10) -> bool:
    """No live process is left in the process group (zombies awaiting init count as gone)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = [
            p
            for p in psutil.process_iter(["pid", "status"])
            if _pgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.1)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_streaming_completions_ttft_itl_tokens_and_mlflow(workdir, llamacpp_server):
    """Every request streams exactly max_tokens tokens (min_tokens = ignore_eos), one per
    chunk: the inter-token gaps are (tokens - 1) per request, counted by the GGUF's
    tokenizer (llama.cpp sends no usage in streams); everything lands in MLflow."""
    _, tdir, meta = one_trial(
        workdir, *server_mode(llamacpp_server), "requests=5", "warmup_s=0", "progress=off"
    )
    m = workdir.metrics(tdir)
    assert meta["status"] == "finished"
    assert m["errors"]["count"] == 0
    assert m["throughput"]["unit"] == "tokens_per_s" and m["throughput"]["value"] > 0
    assert m["rates"]["requests_per_s"] > 0
    assert m["ttfb_ms"]["count"] == 5
    d = m["distributions"]
    assert d["ttft"]["count"] == 5 and d["tpot"]["count"] == 5
    assert d["itl"]["count"] == 5 * (6 - 1)
    assert m["extra"]["tokens.output_per_request"] == 6
    assert m["extra"]["tokens.by_tokenizer"] == 5
    assert "output tokens counted from: tokenizer" in m["notes"]
    # TTFT <= end-to-end, and TPOT is the mean gap
    assert d["ttft"]["max"] <= m["latency_ms"]["max"]
    assert d["tpot"]["mean"] == pytest.approx(d["itl"]["mean"], rel=0.05)
    runs = workdir.runs()
    assert runs["metrics.distributions.itl.p50"].iloc[0] > 0
    assert runs["metrics.throughput"].iloc[0] == pytest.approx(m["throughput"]["value"])


@pytest.mark.parametrize(
    ("api", "stream"), [("chat", True), ("completions", False)], ids=["chat-stream", "nostream"]
)
def test_chat_and_non_streaming(workdir, llamacpp_server, api, stream):
    _, tdir, meta = one_trial(
        workdir,
        *server_mode(llamacpp_server, f"service.api={api}", f"service.stream={stream}"),
        "requests=3",
        "warmup_s=0",
        *NO_MLFLOW,
    )
    m = workdir.metrics(tdir)
    assert meta["status"] == "finished" and m["errors"]["count"] == 0, meta.get("error")
    assert m["extra"]["tokens.output_per_request"] == 6
    if stream:
        assert m["distributions"]["itl"]["count"] == 3 * 5
    else:  # a whole response: usage counts, no TTFT
        assert "output tokens counted from: usage" in m["notes"]
        assert m["ttfb_ms"] is None and "itl" not in m["distributions"]


def test_goodput_against_slos(workdir, llamacpp_server):
    """A TTFT SLO every request meets and a TPOT SLO none can: goodput counts neither
    more nor less than the requests that met all SLOs (here: none)."""
    _, tdir, _ = one_trial(
        workdir,
        *server_mode(llamacpp_server, "service.slo.ttft_ms=600000", "service.slo.tpot_ms=0.001"),
        "requests=3",
        "warmup_s=0",
        *NO_MLFLOW,
    )
    m = workdir.metrics(tdir)
    assert m["extra"]["goodput.fraction"] == 0 and m["extra"]["goodput.requests_per_s"] == 0
    _, tdir, _ = one_trial(
        workdir,
        *server_mode(llamacpp_server, "service.slo.ttft_ms=600000"),
        "requests=3",
        "warmup_s=0",
        *NO_MLFLOW,
        scenario="met",
    )
    m = workdir.metrics(tdir)
    assert m["extra"]["goodput.fraction"] == 1
    assert m["distributions"]["slo_met"]["count"] == 3
    assert m["extra"]["goodput.requests_per_s"] == pytest.approx(m["rates"]["requests_per_s"])


def test_jsonl_dataset_sharegpt_chat_and_pairs(workdir, llamacpp_server, tmp_path):
    lines = [
        {
            "conversations": [
                {"from": "human", "value": "Name a colour."},
                {"from": "gpt", "value": "Blue."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Count to three."},
                {"role": "assistant", "content": "1 2 3"},
            ]
        },
        {"prompt": "The sky is", "output": "blue and wide"},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    _, tdir, meta = one_trial(
        workdir,
        *server_mode(
            llamacpp_server,
            "service.prompts.source=dataset",
            f"service.prompts.path={path}",
            "service.prompts.output_len=dataset",
            "service.ignore_eos=false",
        ),
        "requests=3",
        "warmup_s=0",
        *NO_MLFLOW,
    )
    m = workdir.metrics(tdir)
    assert meta["status"] == "finished" and m["errors"]["count"] == 0, meta.get("error")
    assert m["phases"]["prompts"]["prompts"] == 3


def test_malformed_dataset_line_is_a_clear_error(workdir, llamacpp_server, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "broken"\n')
    proc, _tdir, meta = one_trial(
        workdir,
        *server_mode(
            llamacpp_server, "service.prompts.source=dataset", f"service.prompts.path={path}"
        ),
        *FAST,
        *NO_MLFLOW,
        check=False,
    )
    assert proc.returncode == 1
    assert meta["status"] == "failed" and meta["error"]["class"] == "bad_dataset"
    assert f"{path}:2: not JSON" in meta["error"]["message"]


def test_missing_dataset_file_is_refused_before_anything_starts(workdir, tmp_path):
    proc = workdir.run(
        "service=llamacpp",
        "service.prompts.source=dataset",
        f"service.prompts.path={tmp_path}/nope.jsonl",
        *NO_MLFLOW,
    )
    assert proc.returncode == 2
    assert "service.prompts.path" in proc.stderr and "no such file" in proc.stderr


def test_unknown_model_is_a_clear_error(workdir, llamacpp_server):
    proc, _, meta = one_trial(
        workdir,
        *server_mode(llamacpp_server, "service.model=llama-9000b"),
        *FAST,
        *NO_MLFLOW,
        check=False,
    )
    assert proc.returncode == 1 and meta["error"]["class"] == "unknown_model"
    assert "'llama-9000b' is not served" in meta["error"]["message"]
    assert "gemma-3-270m" in meta["error"]["message"]


def test_batch_refused_where_the_server_takes_one_prompt(workdir):
    proc = workdir.run("service=llamacpp", "batch=4", *NO_MLFLOW)
    assert proc.returncode == 2 and "batch = 4" in proc.stderr and "prompt_lists" in proc.stderr


def test_server_that_never_becomes_ready_fails_cleanly(workdir):
    """llama.cpp needs more than 0.3 s to load: the trial fails (server_not_ready) in
    bounded time, and the launched process group is gone afterwards."""
    t0 = time.monotonic()
    proc, tdir, meta = one_trial(
        workdir, "service=llamacpp", "service.ready_timeout_s=0.3", *FAST, *NO_MLFLOW, check=False
    )
    assert time.monotonic() - t0 < 120
    assert proc.returncode == 1
    assert meta["error"]["class"] == "server_not_ready"
    assert "not ready after" in meta["error"]["message"]
    assert group_gone(launched_pid(tdir, "llamacpp"))


def test_server_killed_mid_trial_counts_errors_and_invalidates(workdir, tmp_path, data_dir):
    """Kill the server once the measured phase has started (8 s long): the requests after
    it are counted errors (connection refused / truncated stream), the trial is
    invalid, nothing hangs."""
    from fixtures.llamacpp import start_llamacpp

    server, url, _ = start_llamacpp(tmp_path / "logs", data_dir)
    stop = threading.Event()

    def kill_after_some_requests() -> None:
        # uvicorn logs one line per request: kill once the trial has made a few.
        while not stop.wait(0.1):
            logs = server.stdout_path.read_text() + server.stderr_path.read_text()
            if logs.count("POST /v1/completions") >= 2:  # the probe and one measured
                os.killpg(server.pid, signal.SIGKILL)
                return

    killer = threading.Thread(target=kill_after_some_requests, daemon=True)
    try:
        killer.start()
        t0 = time.monotonic()
        _, tdir, meta = one_trial(
            workdir,
            "service=llamacpp",
            "service.mode=server",
            f"service.endpoint={url}",
            "service.max_tokens=8",
            "service.prompts.count=40",
            "service.request_timeout_s=20",
            "duration_s=8",
            "warmup_s=0",
            "stall_timeout_s=30",
            *NO_MLFLOW,
        )
        assert time.monotonic() - t0 < 120
    finally:
        stop.set()
        server.stop()
    assert not psutil.pid_exists(server.pid) or group_gone(server.pid)
    m = workdir.metrics(tdir)
    assert meta["status"] == "finished"
    assert m["errors"]["count"] > 0
    assert set(m["errors"]["by_class"]) <= {"connection_refused", "truncated", "connection_lost"}
    assert not m["validity"]["valid"]
    assert any("error rate" in r for r in m["validity"]["reasons"])


def test_embedded_launch_in_a_container_command_digest_and_teardown(workdir, tmp_path):
    """mode=embedded with an image. Apptainer cannot be installed here: a STAND-IN
    ``apptainer`` on PATH records its arguments and runs the command after the image.
    The trial must call
    ``apptainer exec -B DATA -B RESULTS IMAGE python -m llama_cpp.server ...`` and record
    the image's sha256 as the trial's container digest; the server's logs are kept and
    its process group is gone after the trial."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv_log = tmp_path / "apptainer.argv"
    fake = bindir / "apptainer"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import os, sys\n"
        f"open({str(argv_log)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        "args = sys.argv[2:]\n"
        "while args[0].startswith('-'):\n"
        "    args = args[2:] if args[0] in ('-B', '--env') else args[1:]\n"
        "os.execvp(args[1], args[1:])\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    image = tmp_path / "llamacpp.sif"
    image.write_bytes(b"not really an image")
    import hashlib

    digest = "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    workdir.env["PATH"] = f"{bindir}{os.pathsep}{workdir.env['PATH']}"
    _, tdir, meta = one_trial(
        workdir,
        "service=llamacpp",
        f"service.container.image={image}",
        "service.max_tokens=4",
        "service.prompts.count=20",
        "requests=2",
        "warmup_s=0",
        *NO_MLFLOW,
    )
    assert meta["status"] == "finished", meta.get("error")
    argv = argv_log.read_text().split("\n")
    data = str(workdir.env["BENCHFLOW_DATA_DIR"])
    results = str((workdir.path / "results").resolve())
    assert argv[:6] == ["exec", "-B", str(os.path.realpath(data)), "-B", results, str(image)]
    assert argv[6:9] == [argv[6], "-m", "llama_cpp.server"] and "--interrupt_requests" in argv
    assert "--nv" not in argv
    assert meta["lineage"]["container_digest"] == digest
    # launched, logged and torn down like any embedded server
    assert (tdir / "logs" / "llamacpp.err").stat().st_size > 0
    assert workdir.metrics(tdir)["resource"]["scope"] == "sut_process"
    assert group_gone(launched_pid(tdir, "llamacpp"))
