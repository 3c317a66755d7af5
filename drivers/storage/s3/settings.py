"""The ``s3`` driver's settings (``service.*``) and S3's own size limits."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field, PrivateAttr

from drivers.base import ServiceSettings

MiB = 1 << 20
GiB = 1 << 30
MIN_PART = 5 * MiB  # S3's limits on multipart uploads
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * GiB
MAX_OBJECT = 5 * (1 << 40)


class S3Settings(ServiceSettings):
    # the operation of every request; with a mix (``mix={get: 0.7, ...}``) each
    # request's class names its own and this is not used
    op: Literal["put", "get", "delete", "list", "head"] = "put"
    object_size: ByteSize = Field(ByteSize(MiB), description="1KB, 64MiB, 1GB, ... (B..5TiB)")
    objects: int = Field(64, ge=1, description="pool size (get/head/delete/list), key space (put)")
    multipart_threshold: ByteSize = Field(ByteSize(64 * MiB), description="multipart from here")
    part_size: ByteSize = Field(ByteSize(16 * MiB))
    part_concurrency: int = Field(4, ge=1, le=64)
    chunk_size: ByteSize = Field(ByteSize(MiB), description="read/stream granularity")
    verify_fraction: float = Field(0.1, ge=0, le=1, description="share of GETs checksummed")
    list_max_keys: int = Field(1000, ge=1, le=1000)
    endpoint_url: str | None = Field(None, description="mode=server; null: AWS")
    region: str = "us-east-1"
    profile: str | None = Field(None, description="mode=server: an AWS profile")
    bucket: str | None = Field(None, description="null: a temporary bucket, removed after")
    prefix: str = Field("benchflow", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    payload_signing: bool = Field(False, description="SHA-256 of every body in the signature")
    client_checksums: Literal["when_required", "when_supported"] = "when_required"
    connect_timeout_s: float = Field(5, gt=0)
    read_timeout_s: float = Field(60, gt=0)
    retries: int = Field(0, ge=0, le=10, description="retry attempts per request")
    cleanup: bool = Field(True, description="delete what the trial wrote")
    embedded_dir: str | None = Field(None, description="mode=embedded: where objects are kept")
    # Whether the trial has a mix (``mix=``): set by S3Driver from its run settings, for
    # the helpers that see only the settings; never part of the config.
    _mixed: bool = PrivateAttr(False)

    @property
    def mixed(self) -> bool:
        """The trial draws each request's operation from a mix (``service.op`` unused)."""
        return self._mixed
