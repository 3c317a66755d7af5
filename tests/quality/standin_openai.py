"""A stand-in OpenAI-compatible server for the ``qa`` tests: a real HTTP server
(``http.server``, in a thread of the test process) whose answers and failures are
scripted, so retries, backoff and judging can be checked against known answers.
It is not a model: the llama.cpp tests are the real thing.

What it answers (``/v1/completions`` and ``/v1/chat/completions``, not streamed,
with ``usage``): the question is the last ``Question: ...`` line of the prompt
(of the last user message in a chat), else that message's last line.

- ``Repeat the words: X`` -> ``X``; any other question -> ``I do not know``;
- a question containing ``[flaky:N]`` fails with HTTP 503 on its first N attempts;
  ``[flaky-retry-after:N]`` also sends ``Retry-After: 0.5``;
- ``[down]`` always fails with 503; ``[bad]`` fails with 400 (not worth a retry);
- as a judge (the prompt holds ``Candidate answer: ``): ``Score: 5`` when the
  candidate equals a reference (case-insensitive), ``Score: 1`` otherwise, and
  ``I cannot grade this.`` (no score) for a candidate containing ``[garble]``.

Every request is logged (``calls``: time, question, status) for the tests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    t: float  # time.monotonic() on arrival
    path: str
    question: str
    status: int


@dataclass
class StandInOpenAI:
    """The server's state: its model name and every call it received."""

    model: str = "standin-model"
    down: bool = False  # every POST fails with 503 (an endpoint out of service)
    calls: list[Call] = field(default_factory=list)
    _attempts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls_for(self, fragment: str) -> list[Call]:
        return [c for c in self.calls if fragment in c.question]

    def respond(self, path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        text = body.get("prompt") or "\n".join(m["content"] for m in body.get("messages", []))
        question = _question(body)
        with self._lock:
            n = self._attempts[question] = self._attempts.get(question, 0) + 1
        status, headers = 200, {}
        if self.down or "[down]" in question:
            status = 503
        elif "[bad]" in question:
            status = 400
        elif (m := re.search(r"\[flaky(-retry-after)?:(\d+)\]", question)) and n <= int(m[2]):
            status = 503
            if m.group(1):
                headers["Retry-After"] = "0.5"
        with self._lock:
            self.calls.append(Call(time.monotonic(), path, question, status))
        if status != 200:
            return status, {"error": {"message": "stand-in failure", "code": status}}, headers
        answer = _judge(text) if "Candidate answer: " in text else _answer(question)
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(answer.split()),
            "total_tokens": len(text.split()) + len(answer.split()),
        }
        if path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}}
        else:
            choice = {"index": 0, "text": " " + answer}
        choice["finish_reason"] = "stop"
        return 200, {"object": "text_completion", "choices": [choice], "usage": usage}, headers


def _question(body: dict) -> str:
    """The last ``Question: ...`` line of the prompt (or of the last user message, whose
    last line is the question when it has none)."""
    if "messages" in body:
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        text = users[-1] if users else ""
    else:
        text = body.get("prompt", "")
    found = re.findall(r"Question: (.*)", text)
    return found[-1] if found else text.split("\n")[-1]


def _answer(question: str) -> str:
    m = re.match(r"Repeat the words: (.*)", question)
    return m.group(1) if m else "I do not know"


def _judge(text: str) -> str:
    candidate = re.search(r"Candidate answer: (.*)", text).group(1).strip()
    references = re.search(r"Reference answer\(s\): (.*)", text).group(1).split(" | ")
    if "[garble]" in candidate:
        return "I cannot grade this."
    same = candidate.lower() in {r.strip().lower() for r in references}
    return "Score: 5" if same else "Score: 1"


def serve(state: StandInOpenAI) -> tuple[ThreadingHTTPServer, str]:
    """Start the stand-in on a free port; returns the server and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

        def _send(self, status: int, obj: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": state.model}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, {"error": "not found"})
                return
            self._send(*state.respond(self.path, body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
