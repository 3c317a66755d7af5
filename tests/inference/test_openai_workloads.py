"""Workload shapes of the ``openai`` driver against a real llama.cpp server: trace
replay (prompts from hash blocks, lengths from the trace), mix classes with their own
settings, drawn length distributions, and multi-turn sessions.

Request bodies are checked as sent: the trials talk to llama.cpp through a small
recording proxy in this process, which keeps every POST body and response."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest

from benchflow.workload.lengths import LengthConfig, LengthSampler
from benchflow.workload.trace import TraceConfig, generate_trace, iter_trace
from drivers.inference import launchers, prompts
from drivers.inference.openai import trace_text
from drivers.inference.sessions import Groups, SessionSettings

NO_MLFLOW = ["tracking.upload=false", "progress=off"]


class _Recorder(BaseHTTPRequestHandler):
    """Forwards to the upstream server, streaming the answer back as it comes; keeps
    (body, response bytes) of each POST. HTTP/1.0: the answer ends when the connection
    closes, so a streamed answer needs no re-chunking."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        self._forward(self.rfile.read(int(self.headers["Content-Length"])))

    def _forward(self, body: bytes | None) -> None:
        host, port = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            conn.request(self.command, self.path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
            self.end_headers()
            got = bytearray()
            while chunk := resp.read1(65536):
                got += chunk
                self.wfile.write(chunk)
                self.wfile.flush()
        finally:
            conn.close()
        if body is not None:
            self.server.exchanges.append((json.loads(body), bytes(got)))

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder(llamacpp_server):
    """A recording proxy in front of the session's llama.cpp server."""
    url = urlsplit(llamacpp_server.url)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.upstream = (url.hostname, url.port)
    srv.exchanges = []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def via(proxy, srv, *extra: str) -> list[str]:
    return [
        "service=llamacpp",
        "service.mode=server",
        f"service.endpoint={proxy.url}",
        f"service.tokenizer={srv.gguf}",
        "service.max_tokens=4",
        "service.prompts.count=40",
        "service.prompts.input_tokens=16",
        "warmup_s=0",
        *NO_MLFLOW,
        *extra,
    ]


def one_trial(workdir, *args):
    proc = workdir.run("scenario=adhoc", *args)
    assert (workdir.results / "adhoc").is_dir(), proc.stderr[-3000:]
    (tdir,) = workdir.trial_dirs("adhoc")
    meta = workdir.meta(tdir)
    assert proc.returncode == 0 and meta["status"] == "finished", (meta.get("error"), proc.stderr)
    return workdir.metrics(tdir)


def measured(proxy) -> list[tuple[dict, bytes]]:
    """The load's requests (min_tokens set: ignore_eos), not the driver's probe."""
    return [(b, r) for b, r in proxy.exchanges if "min_tokens" in b]


# -- without a server -----------------------------------------------------------------


def test_trace_prompts_share_byte_identical_prefixes(tmp_path):
    path = generate_trace(
        tmp_path / "t.jsonl",
        requests=60,
        rate=10,
        seed=4,
        prefix_groups=3,
        shared_blocks=(2, 3),
        blocks_per_prompt=(3, 5),
        block_tokens=8,
    )
    items = list(iter_trace(TraceConfig(path=str(path))))
    texts = {r.index: trace_text(r.hash_ids, r.input_length, 8, 7) for r in items}
    pairs = 0
    for a in items:
        assert len(texts[a.index].split()) == a.input_length
        for b in items[a.index + 1 :]:
            k = next(
                (i for i, (x, y) in enumerate(zip(a.hash_ids, b.hash_ids, strict=False)) if x != y),
                min(len(a.hash_ids), len(b.hash_ids)),
            )
            if k:  # k shared leading blocks: 8k words and the space after them
                pairs += 1
                assert texts[a.index][: k * 8 * 2] == texts[b.index][: k * 8 * 2]
                assert texts[a.index].split()[: 8 * k] == texts[b.index].split()[: 8 * k]
            else:
                assert texts[a.index].split()[:8] != texts[b.index].split()[:8]
    assert pairs > 50
    assert trace_text(items[0].hash_ids, items[0].input_length, 8, 7) is texts[0]  # cached


def test_lognormal_input_lengths_have_the_configured_mean(data_dir):
    pytest.importorskip("llama_cpp")
    tok = prompts.load_tokenizer("auto", str(launchers.gguf_model(data_dir)))
    dist = LengthConfig(distribution="lognormal", mean=40, std=20)
    lengths = LengthSampler(dist, seed=5, stream=0).take(300)
    ps = prompts.synthetic(300, 40, 8, 0.0, 0, seed=5, tokenizer=tok, in_lengths=lengths)
    counted = np.array([len(tok.encode(p.text)) for p in ps])
    assert counted.mean() == pytest.approx(40, rel=0.10)
    assert counted.std() > 10  # spread, not fixed
    assert [p.input_tokens for p in ps] == lengths.tolist()


def test_session_groups_are_zipf_weighted_and_deterministic():
    g = Groups(SessionSettings(shared_prefix_groups=4, prefix_tokens=8), seed=3)
    draws = [g.of(i) for i in range(4000)]
    again = Groups(SessionSettings(shared_prefix_groups=4), seed=3)
    assert draws == [again.of(i) for i in range(4000)]  # a function of (seed, session)
    share = np.bincount(draws, minlength=4) / len(draws)
    w = 1 / np.arange(1, 5)
    assert share == pytest.approx(w / w.sum(), abs=0.03)
    assert len(set(g.texts)) == 4 and all(len(t.split()) == 8 for t in g.texts)


# -- against llama.cpp ----------------------------------------------------------------


def test_trace_replay_prompts_and_lengths_from_the_trace(workdir, llamacpp_server, recorder):
    """30 requests at 10/s with shared blocks of 8 words: each request's prompt is its
    blocks' text (shared leading blocks: byte-identical prefixes on the wire), its
    max_tokens the trace's output length, which the server's usage confirms."""
    path = generate_trace(
        workdir.path / "trace.jsonl",
        requests=30,
        rate=10,
        seed=1,
        prefix_groups=2,
        shared_blocks=(1, 2),
        blocks_per_prompt=(2, 4),
        output_length=(2, 8),
        block_tokens=8,
    )
    items = list(iter_trace(TraceConfig(path=str(path))))
    m = one_trial(
        workdir,
        *via(recorder, llamacpp_server, "service.stream=false", "service.prompts.block_tokens=8"),
        f"trace.path={path}",
        "concurrency=4",
    )
    assert m["errors"]["count"] == 0 and m["ttfb_ms"] is None
    sent = measured(recorder)
    assert len(sent) == 30
    by_text = {}
    for body, raw in sent:
        usage = json.loads(raw)["usage"]
        by_text[body["prompt"]] = (body, usage)
    total_out = 0
    for r in items:  # every trace request was sent as the trace says
        body, usage = by_text[trace_text(r.hash_ids, r.input_length, 8, 0)]
        assert body["max_tokens"] == body["min_tokens"] == r.output_length
        assert usage["completion_tokens"] == r.output_length
        # a word is a token here, give or take the first word and BOS
        assert abs(usage["prompt_tokens"] - r.input_length) <= 2
        total_out += r.output_length
    shared = [
        (a, b)
        for i, a in enumerate(items)
        for b in items[i + 1 :]
        if a.hash_ids[0] == b.hash_ids[0]
    ]
    assert shared
    for a, b in shared:  # on the wire: the first block's words and the space after them
        pa = by_text[trace_text(a.hash_ids, a.input_length, 8, 0)][0]["prompt"]
        pb = by_text[trace_text(b.hash_ids, b.input_length, 8, 0)][0]["prompt"]
        cut = len(" ".join(pa.split()[:8])) + 1
        assert pa[:cut] == pb[:cut]
    assert m["extra"]["tokens.output_per_request"] * 30 == total_out
    assert m["workload"]["trace"]["requests"] == 30
    mean_in = np.mean([r.input_length for r in items])
    assert m["extra"]["lengths.input.mean"] == pytest.approx(mean_in)
    assert m["extra"]["lengths.output.mean"] == pytest.approx(total_out / 30)


def test_classes_with_their_own_max_tokens_and_lognormal_lengths(
    workdir, llamacpp_server, recorder
):
    """Two classes of a mix with different max_tokens: each class's own figures show
    its own output tokens per request; prompts of lognormal length (mean 40) drawn
    per prompt, summarized in extra.lengths.input.*."""
    m = one_trial(
        workdir,
        *via(
            recorder,
            llamacpp_server,
            "+service.classes={short: {max_tokens: 2}, long: {max_tokens: 7}}",
            "service.prompts.input_dist={distribution: lognormal, mean: 40, std: 20}",
            "service.prompts.count=400",
        ),
        "mix={short: 0.5, long: 0.5}",
        "requests=10",
    )
    assert m["errors"]["count"] == 0
    c = m["classes"]
    assert c["short"]["extra"]["tokens.output_per_request"] == 2
    assert c["long"]["extra"]["tokens.output_per_request"] == 7
    assert c["short"]["rates"] and c["long"]["rates"]
    sent = measured(recorder)
    assert {b["max_tokens"] for b, _ in sent} == {2, 7}
    # extra.lengths: what the 10 requests asked for (the pools' means: the unit test above)
    x = m["extra"]
    assert x["lengths.input.count"] == 10 and x["lengths.input.std"] > 0
    assert x["lengths.output.mean"] == np.mean([b["max_tokens"] for b, _ in sent])


def test_two_turn_sessions_resend_the_history(workdir, llamacpp_server, recorder):
    """turns=2, chat: turn 2's request holds turn 1's user message and the assistant's
    answer; each turn's TTFT is its own distribution; groups add a shared system
    prompt."""
    m = one_trial(
        workdir,
        *via(
            recorder,
            llamacpp_server,
            "service.api=chat",
            "service.sessions.turns=2",
            "service.sessions.think_s=0.05",
            "service.sessions.shared_prefix_groups=2",
            "service.sessions.prefix_tokens=12",
        ),
        "requests=3",
    )
    assert m["errors"]["count"] == 0
    d = m["distributions"]
    assert d["turn1.ttft"]["count"] == 3 and d["turn2.ttft"]["count"] == 3
    assert d["ttft"]["count"] == 3
    assert m["extra"]["tokens.output_per_request"] == 2 * 4  # two turns of max_tokens
    sent = [b for b, _ in measured(recorder)]
    assert len(sent) == 6
    turn1 = [b for b in sent if len(b["messages"]) == 2]
    turn2 = [b for b in sent if len(b["messages"]) == 4]
    assert len(turn1) == 3 and len(turn2) == 3
    for b in turn2:
        sys_msg, user1, answer, user2 = b["messages"]
        assert sys_msg["role"] == "system" and len(sys_msg["content"].split()) == 12
        assert user1["role"] == "user" and answer["role"] == "assistant" and answer["content"]
        assert user2["role"] == "user" and user2["content"] != user1["content"]
        assert {"messages": b["messages"][:2]}["messages"] in [t["messages"] for t in turn1]


def test_prefix_cache_hit_rate_from_usage_or_llamacpp_timings():
    """OpenAI/vLLM say ``usage.prompt_tokens_details.cached_tokens``, llama.cpp's own
    server ``timings.cache_n`` next to ``prompt_n``; either makes the hit rate."""
    from drivers.inference.openai import OpenAIDriver

    d = OpenAIDriver.__new__(OpenAIDriver)
    d._watch = None
    d._reset_counters()
    d._count_cached({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 60}}, None)
    d._count_cached(None, {"cache_n": 20, "prompt_n": 80})
    d._count_cached({"prompt_tokens": 50}, None)  # says nothing: not counted
    out = d.measure_end()
    assert out["prefix_cache.hit_rate"] == pytest.approx(80 / 200)
    assert out["prefix_cache.cached_tokens_per_request"] == 40
