"""Secrets never leave: known secrets planted in every place one can enter (the S3
driver's secret key and the PostgreSQL driver's PGPASSWORD in the environment,
MLflow's tracking password, an API token, a password in the tracking URI, a secret
given as a driver setting) and everything benchflow wrote and logged for real trials
on the team server (S3 requests signed with the planted key, a PostgreSQL login with
the planted password) is scanned for them: the results and logs on disk, the
Prometheus textfile, the log bundle, the report, the command output, the runs'
params, tags and metric names on the server, every artifact object in the S3
bucket, and the server's own logs. (tests/test_secrets.py tests the masking
functions; tests/storage check their drivers' passwords on a local store.)"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from pathlib import Path

from conftest import FAST


def _planted(tag: str) -> str:
    return f"{tag}-{secrets.token_urlsafe(15)}"


def _scan(secret_values: dict[str, str], blobs: dict[str, bytes]) -> list[str]:
    """Where any secret occurs: ``name-of-secret in where``."""
    return [
        f"{name} in {where}"
        for where, data in blobs.items()
        for name, value in secret_values.items()
        if value.encode() in data
    ]


def _files(root: Path, label: str) -> dict[str, bytes]:
    out = {}
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        out[f"{label}/{f.relative_to(root)}"] = f.read_bytes()
        if f.name.endswith((".tar.gz", ".tgz")):  # compressed: scan what is inside
            with tarfile.open(f) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        out[f"{label}/{f.name}!{m.name}"] = tar.extractfile(m).read()
    return out


def test_planted_secrets_appear_nowhere_benchflow_writes_or_logs(
    workdir, tracking_server, postgres_server, postgres_dsn, s3_server, tmp_path
):
    planted = {
        "PGPASSWORD (the server's database password)": postgres_server.password,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "MLFLOW_TRACKING_PASSWORD": _planted("mlflowpw"),
        "OPENAI_API_KEY": _planted("sk"),
        "tracking URI password": _planted("uripw"),
        "config value service.secret_key": _planted("cfgpw"),
    }
    scenario = f"secrets{secrets.token_hex(4)}"
    textfiles = tmp_path / "textfiles"
    workdir.env.update(
        MLFLOW_TRACKING_URI=tracking_server.url,
        PGPASSWORD=postgres_server.password,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SECRET_ACCESS_KEY=planted["AWS_SECRET_ACCESS_KEY"],
        MLFLOW_TRACKING_USERNAME="bench",
        MLFLOW_TRACKING_PASSWORD=planted["MLFLOW_TRACKING_PASSWORD"],
        OPENAI_API_KEY=planted["OPENAI_API_KEY"],
        BENCHFLOW_TEXTFILE_DIR=str(textfiles),
    )
    host = tracking_server.url.removeprefix("http://")
    outputs: dict[str, bytes] = {}

    def run(name: str, *args: str, check: bool = True):
        proc = workdir.run(*args, check=check, timeout=600)
        outputs[f"output of {name}"] = (proc.stdout + proc.stderr).encode()
        return proc

    # a real trial: the S3 driver signs its requests with the secret key from the
    # environment; the trial logs to the server through a URI with a password in it
    run(
        "the sweep",
        "-m",
        "service=s3",
        "service.mode=server",
        f"service.endpoint_url={s3_server.endpoint_url}",
        "service.object_size=4KiB",
        "service.objects=8",
        f"scenario={scenario}",
        "tracking=server",
        f"tracking.uri=http://bench:{planted['tracking URI password']}@{host}",
        "progress=off",
        *FAST,
    )
    # a PostgreSQL trial that logs in with the password from PGPASSWORD
    run(
        "a postgres trial",
        "service=postgres",
        "service.mode=server",
        f"service.dsn='{postgres_dsn}'",
        "service.rows=1000",
        f"scenario={scenario}",
        "tracking=server",
        f"tracking.uri=http://bench:{planted['tracking URI password']}@{host}",
        "progress=off",
        *FAST,
    )
    tdirs = workdir.trial_dirs(scenario)
    assert len(tdirs) == 2
    for tdir in tdirs:
        assert json.loads((tdir / "meta.json").read_text())["status"] == "finished", tdir
    run_ids = {json.loads((t / "upload.json").read_text())["run_id"] for t in tdirs}
    # a password given as a config value is refused (exit 2), and not echoed
    refused = run(
        "a refused config",
        "service=s3",
        f"service.secret_key={planted['config value service.secret_key']}",
        f"scenario={scenario}x",
        "tracking=server",
        check=False,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (sweep_dir,) = (workdir.results / scenario / "_sweeps").iterdir()
    run("logs", "logs", sweep_dir.name, "-o", str(workdir.path / "bundle.tar.gz"))
    run("report", "report", sweep_dir.name)

    blobs = {**outputs, **_files(workdir.path, "workdir"), **_files(textfiles, "textfiles")}
    assert any("bundle.tar.gz!" in k for k in blobs) and any("/report.html" in k for k in blobs)
    assert list(textfiles.glob("*.prom"))

    # what the server holds: every run of the experiment, params, tags, metric names ...
    c = tracking_server.client()
    exp = c.get_experiment_by_name(scenario)
    runs = c.search_runs([exp.experiment_id])
    assert run_ids <= {r.info.run_id for r in runs} and len(runs) == 3  # 2 trials + a parent
    for r in runs:
        d = r.data
        blobs[f"params/tags/metrics of run {r.info.run_id}"] = json.dumps(
            [d.params, d.tags, sorted(d.metrics)]
        ).encode()
    # ... and every artifact object in the S3 bucket
    s3 = s3_server.client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=tracking_server.bucket, Prefix=f"{exp.experiment_id}/"
    ):
        keys += [o["Key"] for o in page.get("Contents", [])]
    for run_id in run_ids:
        assert any(k.endswith(f"{run_id}/artifacts/effective_config.yaml") for k in keys), keys
    assert any("/artifacts/report/" in k for k in keys), "the report was logged to MLflow"
    for k in keys:
        buf = io.BytesIO()
        s3.download_fileobj(tracking_server.bucket, k, buf)
        blobs[f"s3://{tracking_server.bucket}/{k}"] = buf.getvalue()
    # the server's own state and logs (it was started with the database password)
    blobs.update(_files(tracking_server.dir, "server"))

    assert len(blobs) > 40, sorted(blobs)  # the scan really looked at things
    leaks = _scan(planted, blobs)
    assert leaks == [], leaks
