"""benchflow.sut.embedded: the throwaway servers other parts of benchflow reuse."""

from __future__ import annotations

import os

import psutil
import pytest


def test_embedded_postgres_lifecycle_restart_and_cleanup(tmp_path):
    import psycopg2

    from benchflow.sut.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(logs_dir=tmp_path, password="pw-" + "z" * 12, database="mlflow")
    with pg:
        assert pg.password not in repr(pg)
        assert pg.sqlalchemy_url.startswith("postgresql+psycopg2://postgres:")
        root, pids = pg.root, pg.pids()
        postmaster = psutil.Process(pids[0])
        if os.geteuid() == 0:  # initdb and postgres refuse root: run as the postgres user
            assert postmaster.username() == "postgres"
        with psycopg2.connect(pg.dsn) as c, c.cursor() as cur:
            cur.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(pg.dsn.replace(pg.password, "wrong-password"))
        port = pg.port
        pg.crash()  # pg_ctl stop -m immediate
        assert not pg.running() and not postmaster.is_running()
        pg.start()  # crash recovery on the same data, same port
        assert pg.port == port
        with psycopg2.connect(pg.url) as c, c.cursor() as cur:
            cur.execute("SELECT x FROM kept")
            assert cur.fetchone() == (42,)
        assert (tmp_path / "postgres.err").exists()
    assert not root.exists()
    assert not any(psutil.pid_exists(p) and _is_postgres(p) for p in pids)


def _is_postgres(pid: int) -> bool:
    try:
        return "postgres" in psutil.Process(pid).name()
    except psutil.Error:
        return False


def test_embedded_s3_keeps_its_keys_off_the_command_line(tmp_path):
    import boto3
    from botocore.exceptions import ClientError

    from benchflow.sut.embedded import EmbeddedS3

    with EmbeddedS3(logs_dir=tmp_path) as s3:
        root = s3.root
        cmdline = " ".join(psutil.Process(s3.pids()[0]).cmdline())
        assert s3.secret_key not in cmdline and s3.secret_key not in repr(s3)
        s3.create_bucket("artifacts")
        c = s3.client()
        c.put_object(Bucket="artifacts", Key="a/b.txt", Body=b"hello")
        assert c.get_object(Bucket="artifacts", Key="a/b.txt")["Body"].read() == b"hello"
        env = s3.environ()
        assert env["AWS_ENDPOINT_URL_S3"] == s3.endpoint_url
        bad = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key="not-the-secret-key",
            region_name=s3.region,
        )
        with pytest.raises(ClientError):
            bad.list_objects_v2(Bucket="artifacts")
        assert s3.secret_key not in (tmp_path / "s3.err").read_text()
    assert not root.exists() and not s3.running()
