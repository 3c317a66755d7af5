"""The s3 driver against a real S3-compatible server (rclone serve s3, started by a
fixture, or by the driver itself in mode=embedded)."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from conftest import FAST

from storage.helpers import assert_nowhere, override, trials

MiB = 1 << 20


def server_mode(workdir, s3, secret_key: str | None = None) -> list[str]:
    """Overrides for mode=server against the fixture; its keys go in the environment."""
    workdir.env.update(
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=secret_key or s3.secret_key,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return ["service=s3", "service.mode=server", f"service.endpoint_url={s3.endpoint_url}"]


def test_every_operation_on_a_real_server(workdir, s3_server):
    proc = workdir.run(
        "-m",
        *server_mode(workdir, s3_server),
        "service.op=put,get,head,list,delete",
        "service.object_size=4KiB",
        "service.objects=100",
        "service.verify_fraction=1",
        "concurrency=2",
        "requests=120",  # enough for a p99 (a valid trial) however slow the machine
        "warmup_s=0",  # delete: all 100 pooled objects go to the measured requests
        "monitor.interval_s=0.2",
    )
    assert proc.returncode == 0, workdir.explain(proc)
    done = {override(meta, "service.op"): (meta, m) for meta, m in trials(workdir)}
    assert set(done) == {"put", "get", "head", "list", "delete"}
    # DELETE consumes the pool: 100 objects for 120 requests; the rest say so.
    delete = done.pop("delete")[1]
    assert delete["load"]["completed"] == 120 and delete["rates"]["ok_requests_per_s"] > 0
    assert delete["errors"]["by_class"] == {"pool_exhausted": 20}
    assert not delete["validity"]["valid"]
    for op, (meta, m) in done.items():
        assert meta["status"] == "finished" and m["validity"]["valid"], (op, m["validity"])
        assert m["rates"]["requests_per_s"] > 0
        if op == "put" and m["errors"]["count"]:
            # rclone's own race, not the driver's: now and then two concurrent PUTs into
            # a directory rclone has not seen yet end in "Dir.Rename error: file does not
            # exist" and an InternalError reply. The driver must count it, as it does.
            assert set(m["errors"]["by_class"]) == {"InternalError"}, m["errors"]
            log = (s3_server.logs_dir / "s3-fixture.err").read_text()
            assert log.count("Dir.Rename error") >= m["errors"]["count"], m["errors"]
        else:
            assert m["errors"]["count"] == 0, (op, m["errors"])
        unit = "MiB_per_s" if op in ("put", "get") else "requests_per_s"
        assert m["throughput"]["unit"] == unit, op
    put, get = done["put"][1], done["get"][1]
    assert put["rates"]["MiB_per_s"] == pytest.approx(put["rates"]["requests_per_s"] * 4 / 1024)
    assert get["phases"]["prepare"]["objects"] == 100
    # GET: first byte and last byte, every GET verified against the written checksum
    assert get["ttfb_ms"]["p50"] <= get["latency_ms"]["p50"]
    assert get["extra"]["s3.verified_gets"] == get["load"]["completed"]
    # Nothing left behind: each trial removed its temporary bucket.
    assert not [
        b
        for b in s3_server.client().list_buckets()["Buckets"]
        if b["Name"].startswith("benchflow-")
    ]
    assert_nowhere(s3_server.secret_key, workdir, proc.stdout, proc.stderr)


def test_embedded_mode_multipart_uploads_and_verified_gets_of_multipart_objects(workdir):
    """mode=embedded: each trial starts its own server (rclone), then removes it."""
    size, part = 11 * MiB, 5 * MiB
    proc = workdir.run(
        "-m",
        "service=s3",
        "service.op=put,get",
        f"service.object_size={size}",
        "service.multipart_threshold=8MiB",
        f"service.part_size={part}",
        "service.part_concurrency=3",
        "service.objects=2",
        "service.verify_fraction=1",
        "duration_s=1",
        "warmup_s=0",
        "monitor.interval_s=0.2",
    )
    assert proc.returncode == 0, workdir.explain(proc)
    done = {override(meta, "service.op"): (meta, m) for meta, m in trials(workdir)}
    (_, put), (meta, get) = done["put"], done["get"]
    parts = math.ceil(size / part)
    assert put["extra"]["s3.parts_per_object"] == parts
    assert put["distributions"]["part"]["count"] == parts * put["load"]["completed"]
    assert put["errors"]["count"] == 0 and get["errors"]["count"] == 0
    assert get["extra"]["s3.verified_gets"] == get["load"]["completed"] > 0
    for m in (put, get):
        assert m["phases"]["server_start"]["seconds"] > 0
        assert m["resource"]["scope"] == "sut_process"  # the monitor watched rclone
    logs = workdir.results / "adhoc" / meta["trial_id"] / "logs"
    assert "Starting s3 server" in (logs / "s3.err").read_text()


def test_wrong_credentials_and_unreachable_endpoint_are_failed_trials(workdir, s3_server):
    from benchflow.sut.servers import free_port

    wrong = "wrong-secret-" + "y" * 20
    args = server_mode(workdir, s3_server, secret_key=wrong)
    args[-1] += f",http://127.0.0.1:{free_port()}"  # a second trial: nobody listens there
    proc = workdir.run("-m", *args, "service.connect_timeout_s=2", *FAST)
    assert proc.returncode == 1
    (meta1, _), (meta2, _) = trials(workdir)
    assert meta1["status"] == meta2["status"] == "failed"
    assert meta1["error"]["class"] in ("SignatureDoesNotMatch", "InvalidAccessKeyId"), meta1
    assert s3_server.endpoint_url in meta1["error"]["message"]
    assert meta2["error"]["class"] == "connection_error", meta2["error"]
    assert_nowhere(wrong, workdir, proc.stdout, proc.stderr)
    assert_nowhere(s3_server.secret_key, workdir, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["service.object_size=0"], ["service.object_size", "from 1 B to 5 TiB"]),
        (["service.object_size=6TiB"], ["service.object_size", "5 TiB"]),
        (
            ["service.object_size=100MiB", "service.part_size=1MiB"],
            ["service.part_size", "from 5 MiB to 5 GiB"],
        ),
        (
            ["service.object_size=1TiB", "service.part_size=8MiB"],
            ["service.part_size", "S3 allows 10000"],
        ),
        (["service.object_size=lots"], ["service.object_size", "'lots'"]),
        (["service.op=copy"], ["service.op", "put, get, delete, list, head"]),
        (["service.verify_fraction=2"], ["service.verify_fraction", "less than or equal to 1"]),
        (["service.endpoint_url=http://x"], ["service.endpoint_url", "only for mode=server"]),
        (["service.secret_key=abc"], ["service.secret_key", "unknown key"]),
    ],
    ids=[
        "zero",
        "too-big",
        "tiny-part",
        "too-many-parts",
        "bad-size",
        "op",
        "fraction",
        "ep",
        "key",
    ],
)
def test_impossible_s3_settings_are_refused_before_anything_starts(overrides, words):
    """The same validation `python -m benchflow` runs (exit 2), called in process."""
    from benchflow.config import ConfigError, compose_trials

    with pytest.raises(ConfigError) as err:
        compose_trials(["service=s3", *overrides], multirun=False)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_large_objects_are_streamed_not_held_in_memory(s3_server, tmp_path):
    """A 128 MiB PUT (multipart) and a verified GET through the driver, in this process:
    Python's peak allocation stays a small fraction of the object."""
    from benchflow.load.engine import RequestContext
    from drivers.base import RunSettings, TrialContext
    from drivers.storage.s3 import S3Driver, S3Settings

    size = 128 * MiB

    class Buf:
        def observe(self, name, ns):
            pass

    def driver(op: str) -> S3Driver:
        ctx = TrialContext(op * 8, RunSettings(1, 1, 1, 0, None), tmp_path, tmp_path)
        s = S3Settings(
            name="s3",
            driver="s3",
            mode="server",
            endpoint_url=s3_server.endpoint_url,
            op=op,
            object_size=size,
            objects=1,
            part_size=32 * MiB,
            verify_fraction=1,
        )
        d = S3Driver(s, ctx)
        d._creds = {
            "aws_access_key_id": s3_server.access_key,
            "aws_secret_access_key": s3_server.secret_key,
        }
        return d

    get = driver("get")
    get.setup()  # writes the pool object (multipart) and its checksum
    put = driver("put")
    put.setup()
    try:
        for d in (put, get):
            w = d.open_worker(0)
            tracemalloc.start()
            try:
                assert d.operation(RequestContext(0, w, Buf())) == size
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
                d.close_worker(w)
            assert peak < size / 8, f"{d.settings.op}: peak {peak / MiB:.0f} MiB"
        assert get._verified == 1
    finally:
        put.teardown()
        get.teardown()
