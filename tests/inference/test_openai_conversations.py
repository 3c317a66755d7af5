"""Conversations from a dataset file (``service.sessions.dataset``, ShareGPT or OpenAI
``messages`` JSONL) for the ``openai`` driver: the reader's offset index, the seeded
order, validation (exit 2 naming the file and line), and, against the llama.cpp
stand-in through the recording proxy of test_openai_workloads, what each turn
resends: the dataset's user turns and the server's own previous answers."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
from test_openai_workloads import NO_MLFLOW, measured, via
from test_openai_workloads import recorder as recorder  # the proxy fixture

from benchflow.config.compose import compose_trials
from benchflow.config.schema import ConfigError
from benchflow.results.identity import config_hash
from drivers.inference.conversations import (
    SAMPLE_CONVERSATIONS,
    ConversationError,
    index_conversations,
    parse_conversation,
)
from drivers.inference.sessions import DatasetSessions, SessionSettings, answer_budget

DATASET = "++service.sessions.dataset"  # `++`: the services' YAML may not name the key


def sharegpt(ident, *pairs, system=None):
    turns = [{"from": "system", "value": system}] if system else []
    for user, answer in pairs:
        turns.append({"from": "human", "value": user})
        if answer is not None:
            turns.append({"from": "gpt", "value": answer})
    return {"id": ident, "conversations": turns}


def openai_msgs(ident, *pairs, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for user, answer in pairs:
        msgs.append({"role": "user", "content": user})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
    return {"id": ident, "messages": msgs}


# Five usable conversations (both shapes), one without a user turn, a blank line.
LINES = [
    sharegpt("a", ("Name a red fruit.", "An apple."), ("And a yellow one?", "A banana is yellow")),
    openai_msgs(
        "b",
        ("Say hello.", "Hello there, how are you today my friend"),
        ("Count to three.", None),  # no answer in the dataset: max_tokens = the cap
        system="Answer briefly.",
    ),
    {"id": "skip", "conversations": [{"from": "gpt", "value": "Nobody asked."}]},
    sharegpt("c", ("Pick a colour.", "Blue.")),
    None,  # a blank line
    {
        "id": "d",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Describe rain."}]},
            {"role": "assistant", "content": "Water falling from clouds"},
            {"role": "tool", "content": "ignored"},
            {"role": "user", "content": "In one word?"},
            {"role": "assistant", "content": "Wet"},
            {"role": "user", "content": "Thanks."},
        ],
    },
    sharegpt("e", ("Tell me a story.", None)),
]


def write(path, lines) -> str:
    path.write_text("".join(("" if x is None else json.dumps(x)) + "\n" for x in lines))
    return str(path)


# -- the reader, without a server ------------------------------------------------------


def test_index_keeps_offsets_and_reads_both_shapes_back(tmp_path):
    path = write(tmp_path / "c.jsonl", LINES)
    f = index_conversations(path)
    assert len(f) == 5 and f.skipped == 1 and f.lines == 7
    assert f.turns == 2 + 2 + 1 + 3 + 1
    data = Path(path).read_bytes()
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    raw = data.splitlines(keepends=True)
    # each kept offset points at its line's first byte
    starts = [sum(len(x) for x in raw[:n]) for n in range(len(raw))]
    assert list(f._offsets) == [starts[i] for i in (0, 1, 3, 5, 6)]
    assert list(f._line_nos) == [1, 2, 4, 6, 7]
    a, b, c, d, e = (f.read(i) for i in range(5))
    assert (a.id, a.line, a.system) == ("a", 1, None)
    assert [(t.user, t.answer) for t in a.turns] == [
        ("Name a red fruit.", "An apple."),
        ("And a yellow one?", "A banana is yellow"),
    ]
    assert b.system == "Answer briefly." and b.turns[1].answer is None
    assert c.line == 4 and len(c.turns) == 1
    # content parts, a tool turn left out, a last user turn without an answer
    assert [(t.user, t.answer) for t in d.turns] == [
        ("Describe rain.", "Water falling from clouds"),
        ("In one word?", "Wet"),
        ("Thanks.", None),
    ]
    assert e.turns[0].answer is None
    assert index_conversations(path) is f  # once per process and file version
    g = pickle.loads(pickle.dumps(f))  # client processes get the index, not the file
    assert g._fd is None and g.read(4) == e


def test_a_byte_order_mark_and_a_last_line_without_newline(tmp_path):
    path = tmp_path / "bom.jsonl"
    lines = [json.dumps(sharegpt("a", ("q1", "a1"))), json.dumps(openai_msgs("b", ("q2", None)))]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    f = index_conversations(path)
    assert [f.read(i).turns[0].user for i in range(len(f))] == ["q1", "q2"]


def test_roles_answers_and_skips():
    conv = parse_conversation(
        {
            "conversations": [
                {"from": "gpt", "value": "a greeting before any question: left out"},
                {"from": "human", "value": "q1"},
                {"from": "gpt", "value": "part one"},
                {"from": "gpt", "value": "part two"},
                {"from": "human", "value": "   "},  # blank: left out with its answer
                {"from": "gpt", "value": "lost"},
                {"role": "user", "content": "q2"},
            ]
        },
        "x:1",
    )
    assert [(t.user, t.answer) for t in conv.turns] == [("q1", "part one\npart two"), ("q2", None)]
    assert not parse_conversation({"messages": [{"role": "system", "content": "s"}]}, "x").turns


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ('{"conversations": [{"from": "human", "value": "hi"}', "not JSON"),
        ("[1, 2]", "a list, not an object"),
        ('{"prompt": "hi"}', "keys ['prompt']"),
        ('{"messages": {"role": "user"}}', "'messages' must be a list of turns"),
        ('{"conversations": [{"value": "hi"}]}', "turn 1 has no 'from'"),
        ('{"messages": [{"role": "user", "content": 3}]}', "turn 1 (user)"),
    ],
)
def test_malformed_line_names_the_file_and_line(tmp_path, line, what):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(sharegpt("ok", ("fine", "yes"))) + "\n\n" + line + "\n")
    with pytest.raises(ConversationError) as err:
        index_conversations(path)
    assert str(err.value).startswith(f"{path}:3: ") and what in str(err.value)


def test_unreadable_gzip_and_changed_files(tmp_path):
    with pytest.raises(ConversationError, match="cannot read the conversations"):
        index_conversations(tmp_path / "missing.jsonl")
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(ConversationError, match="gzip"):
        index_conversations(gz)
    path = tmp_path / "c.jsonl"
    write(path, LINES)
    f = index_conversations(path)
    write(path, LINES[:2])  # rewritten after it was indexed
    with pytest.raises(ConversationError, match="changed since it was indexed"):
        f.read(0)


def test_order_is_a_function_of_the_seed_and_sessions_cycle(tmp_path):
    path = write(tmp_path / "c.jsonl", LINES)
    f = index_conversations(path)
    assert list(f.order(7)) == list(f.order(7))
    assert sorted(f.order(7)) == list(range(5))
    assert any(list(f.order(s)) != list(f.order(7)) for s in (8, 9, 10))
    ds = DatasetSessions(SessionSettings(dataset=path, max_turns=2), seed=7)
    order = list(f.order(7))
    assert ds.conversation(0).turns == f.read(order[0]).turns[:2]
    assert ds.conversation(5).line == ds.conversation(0).line  # cycling
    assert ds.conversation(-1).line == f.read(order[-1]).line  # warm-up: from the end
    assert all(len(ds.conversation(j).turns) <= 2 for j in range(5))  # max_turns


def test_answer_budget_is_the_answers_words_capped():
    assert answer_budget("one two three", 8) == 3
    assert answer_budget("one two three", 2) == 2
    assert answer_budget("", 8) == 1
    assert answer_budget(None, 8) == 8


def test_sample_dataset_ships_with_the_package():
    f = index_conversations(SAMPLE_CONVERSATIONS)
    assert len(f) == 20 and f.skipped == 0 and f.turns >= 40


# -- validation and identity, in process (no server) -----------------------------------

BASE = ["service=llamacpp", "service.mode=server", "service.endpoint=http://127.0.0.1:9"]


def test_validation_refuses_with_key_value_and_what_is_allowed(tmp_path):
    path = write(tmp_path / "c.jsonl", LINES)
    bad = [
        ([f"{DATASET}={tmp_path}/missing.jsonl"], "service.sessions.dataset", "cannot read"),
        ([f"{DATASET}={path}", "service.sessions.turns=3"], "service.sessions.turns", "1 with"),
        (["++service.sessions.max_turns=2"], "service.sessions.max_turns", "set service.sess"),
        ([f"{DATASET}={path}", "batch=2"], "batch", "one conversation per request"),
    ]
    empty = write(tmp_path / "empty.jsonl", [LINES[2], None])
    bad.append(([f"{DATASET}={empty}"], "service.sessions.dataset", "no conversation with"))
    for extra, key, what in bad:
        with pytest.raises(ConfigError) as err:
            compose_trials(BASE + extra, False)
        assert err.value.key == key and what in err.value.allowed, (extra, str(err.value))


def test_the_dataset_keys_enter_the_hash_and_compose_in_sweeps(tmp_path):
    one = write(tmp_path / "one.jsonl", LINES)
    two = write(tmp_path / "two.jsonl", LINES[:2])
    (plain,) = compose_trials(BASE, False)
    (turns2,) = compose_trials([*BASE, "service.sessions.turns=2"], False)
    assert "sessions" not in plain.resolved["service"]
    # trials of synthetic sessions keep the identity they had before the keys existed
    assert set(turns2.resolved["service"]["sessions"]) == {
        "turns",
        "think_s",
        "shared_prefix_groups",
        "prefix_tokens",
        "zipf_theta",
    }
    specs = compose_trials(
        [*BASE, f"{DATASET}={one},{two}", "++service.sessions.max_turns=2"], True
    )
    assert [s.service.sessions.dataset for s in specs] == [one, two]
    assert specs[0].resolved["service"]["sessions"]["max_turns"] == 2
    hashes = {config_hash(s, "v") for s in [plain, turns2, *specs]}
    assert len(hashes) == 4


def test_malformed_line_exits_2_before_any_trial(workdir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(sharegpt("ok", ("fine", "yes"))) + "\n{not json\n")
    proc = workdir.run(*BASE, f"{DATASET}={path}", *NO_MLFLOW)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "service.sessions.dataset" in proc.stderr and f"{path}:2: not JSON" in proc.stderr
    assert not (workdir.results / "adhoc").exists()


# -- against llama.cpp -----------------------------------------------------------------


def answer_of(raw: bytes, chat: bool) -> str:
    """The text a streamed answer carried (as the driver read it)."""
    out = []
    for line in raw.decode().splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        for ch in json.loads(line[5:]).get("choices") or ():
            text = (ch.get("delta") or {}).get("content") if chat else ch.get("text")
            out.append(text or "")
    return "".join(out)


def by_session(exchanges, f, order: list[int]):
    """(conversation, its requests) in the order sent: concurrency=1 runs the sessions
    one after another, whole; the last three are the measured ones, the seeded order's
    first three, and the warm-up's before them take the order from its end."""
    measured_convs = [f.read(i) for i in order[:3]]
    n = sum(len(c.turns) for c in measured_convs)
    warm, meas = exchanges[:-n], exchanges[-n:]
    out, pos, j = [], 0, 0
    while pos < len(warm):
        conv = f.read(order[(-1 - j) % len(order)])
        out.append((conv, warm[pos : pos + len(conv.turns)]))
        pos, j = pos + len(conv.turns), j + 1
    assert pos == len(warm)
    pos = 0
    for conv in measured_convs:
        out.append((conv, meas[pos : pos + len(conv.turns)]))
        pos += len(conv.turns)
    return out, measured_convs


def test_turns_resend_the_dataset_and_the_servers_answers(
    workdir, llamacpp_server, recorder, tmp_path
):
    """Two trials of one sweep, same seed, chat and completions, with a warm-up: each
    turn k sends the dataset's user turns 1..k and the server's own answers before it
    (not the dataset's), max_tokens is the dataset answer's words capped at 6; the
    measured sessions are the seeded order's first three in both trials, the warm-up's
    the order's last; TTFT per turn; counts and the file's sha256 in the result."""
    path = write(tmp_path / "conv.jsonl", LINES)
    proc = workdir.run(
        "-m",
        "scenario=adhoc",
        *via(recorder, llamacpp_server, f"{DATASET}={path}", "service.max_tokens=6"),
        "service.api=chat,completions",
        "warmup_s=0.4",
        "requests=3",
        "concurrency=1",
        "seed=3",
    )
    assert proc.returncode == 0, workdir.explain(proc)
    f = index_conversations(path)
    trials = {}
    for tdir in workdir.trial_dirs():
        meta, m = workdir.meta(tdir), workdir.metrics(tdir)
        api = "chat" if any("service.api=chat" in o for o in meta["overrides"]) else "completions"
        trials[api] = (tdir, meta, m)
    assert set(trials) == {"chat", "completions"}
    sent = measured(recorder)
    seen, differs = {}, []
    for api, (tdir, meta, m) in trials.items():
        chat = api == "chat"
        order = [int(i) for i in f.order(meta["seed_effective"])]
        mine = [(b, r) for b, r in sent if ("messages" in b) == chat]
        sessions, convs = by_session(mine, f, order)
        assert len(sessions) > 3  # the warm-up sent one at least
        for conv, session in sessions:
            history: list[str] = [conv.system] if conv.system else []
            for k, ((body, raw), turn) in enumerate(zip(session, conv.turns, strict=True), 1):
                history.append(turn.user)
                want_max = min(len(turn.answer.split()), 6) if turn.answer else 6
                assert body["max_tokens"] == body["min_tokens"] == want_max
                if chat:
                    roles = ["user", "assistant"] * (k - 1) + ["user"]
                    roles = ["system", *roles] if conv.system else roles
                    assert [mm["role"] for mm in body["messages"]] == roles
                    assert [mm["content"] for mm in body["messages"]] == history
                else:
                    assert body["prompt"] == "\n".join(history)
                answer = answer_of(raw, chat)
                differs.append(answer != turn.answer)
                history.append(answer)  # the server's answer, not the dataset's
        d, x = m["distributions"], m["extra"]
        assert m["errors"]["count"] == 0
        longest = max(len(c.turns) for c in convs)
        for k in range(1, longest + 1):
            assert d[f"turn{k}.ttft"]["count"] == sum(len(c.turns) >= k for c in convs)
        assert f"turn{longest + 1}.ttft" not in d
        assert d["ttft"]["count"] == 3
        assert x["sessions.conversations"] == 3
        assert x["sessions.turns"] == sum(len(c.turns) for c in convs)
        assert x["sessions.dataset.conversations"] == 5 and x["sessions.dataset.skipped"] == 1
        custom = json.loads((tdir / "custom.json").read_text())["sessions"]["dataset"]
        assert custom["sha256"] == f.sha256 and custom["given"] == path
        assert custom["conversations"] == 5 and custom["skipped_no_user_turn"] == 1
        assert "5 with a user turn, 1 skipped (no user turn)" in m["notes"]
        seen[api] = [c.line for c in convs]
    assert any(differs)  # the resent answers were the server's
    # the same seed: the same conversations in both trials
    assert seen["chat"] == seen["completions"]
