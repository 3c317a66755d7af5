"""Every kind of bad configuration ends with exit code 2 and one clear line,
naming the key, the value and what is allowed — before anything starts."""

import pytest

CASES = [
    # (overrides, words the message must contain)
    (["concurrency=abc"], ["concurrency", "'abc'", "integer"]),
    (["concurrency=0"], ["concurrency", "0", "greater than or equal to 1"]),
    (["arrival=bursty"], ["arrival", "'bursty'", "allowed: constant, poisson"]),
    (["nosuchkey=1"], ["nosuchkey", "unknown key", "concurrency"]),
    (["service=nosuchservice"], ["service", "'nosuchservice'", "allowed:", "faiss", "noop"]),
    (["service.index.type=HSNW"], ["service.index.type", "'HSNW'", "Flat, IVF, HNSW"]),
    (["service.index.bogus=3"], ["service.index.bogus", "unknown key"]),
    (
        ["service=noop", "batch=4", "clients=2", "concurrency=1"],
        ["clients", "concurrency is the total"],
    ),
    (["service=fileio", "service.pattern=zigzag"], ["service.pattern", "allowed: seq, rand"]),
    (["service=sleep", "batch=8"], ["batch", "does not batch"]),
    (["service=faiss", "batch=5000"], ["batch", "at most dataset.queries"]),
    (["service=faiss", "service.device=cuda"], ["service.device", "cuda", "use device=cpu"]),
    (["tracking=server", "tracking.uri=null"], ["tracking", "needs tracking.uri"]),
    (["rate=-5"], ["rate", "greater than 0"]),
    (["concurrency=1,2"], ["concurrency=1,2", "needs -m"]),
    (
        ["service=sleep", "clients=4", "concurrency=4", "++service.resources.nodes=2"],
        ["service.mode", "'embedded'", "own node's loopback", "service.server=ID"],
    ),
    (["validity.max_lost_client_share=1"], ["validity.max_lost_client_share", "less than 1"]),
    (["placement.client_cpus=x1"], ["placement.client_cpus", "'x1'", "not a CPU list"]),
    (["placement.client_cpus=3-1"], ["placement.client_cpus", "runs backwards"]),
    (
        ["placement.client_cpus=0-1", "placement.server_cpus=1"],
        ["placement", "share CPU(s) 1"],
    ),
    (["placement.clients_cpus=1"], ["placement.clients_cpus", "unknown key", "client_cpus"]),
    (
        [
            "service=postgres",
            "service.mode=server",
            "service.dsn='host=x'",
            "placement.server_cpus=0",
        ],
        ["placement.server_cpus", "only for a server the trial launches"],
    ),
]


@pytest.mark.parametrize(("overrides", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_config_exits_2_with_a_clear_message(workdir, overrides, words):
    proc = workdir.run(*overrides)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in msg, msg
    assert not (workdir.results).exists(), "nothing may start on a bad config"


def test_a_bad_trial_in_a_sweep_stops_the_whole_sweep_before_it_starts(workdir):
    proc = workdir.run("-m", "service=noop,faiss", "batch=1,5000")
    assert proc.returncode == 2
    assert "batch = 5000" in proc.stderr
    assert not workdir.results.exists()


def test_hydra_informational_flags_work(workdir):
    cfg = workdir.run("--cfg", "job", "service=noop", check=True)
    assert "driver: noop" in cfg.stdout and "concurrency: 1" in cfg.stdout
    helptext = workdir.run("--help", check=True)
    assert "benchflow" in helptext.stdout and "service: " in helptext.stdout
    completion = workdir.run("-sc", "install=bash", check=True)
    assert "complete" in completion.stdout
