"""The ``postgres`` driver's settings (``service.*``) and what a DSN may hold."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from benchflow.secrets import mask
from drivers.base import ServiceSettings

WORKLOADS = ("point_select", "range", "insert", "update", "batch_insert", "mix", "tpcb")
_IDENT = r"^[a-z_][a-z0-9_]{0,40}$"


class PostgresSettings(ServiceSettings):
    workload: Literal[
        "point_select", "range", "insert", "update", "batch_insert", "mix", "tpcb"
    ] = "point_select"
    rows: int = Field(
        100_000, ge=1, le=2_000_000_000, description="accounts rows (pgbench scale 1 = 100,000)"
    )
    range_rows: int = Field(100, ge=1, description="rows per range lookup")
    read_ratio: float = Field(0.9, ge=0, le=1, description="mix: share of point selects")
    prepared: bool = Field(False, description="server-side prepared statements")
    isolation_level: Literal["read_committed", "repeatable_read", "serializable"] = "read_committed"
    statement_timeout_ms: int = Field(30_000, ge=0, description="0: none")
    connect_timeout_s: int = Field(10, ge=1)
    dsn: str | None = Field(None, description="mode=server: libpq DSN or URL, no password")
    auth_env: str = Field("PGPASSWORD", description="environment variable holding the password")
    table_prefix: str = Field("benchflow_", pattern=_IDENT)
    keep_data: bool = Field(False, description="mode=server: leave the tables behind")
    server_settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="mode=embedded: postgresql.conf settings"
    )
    start_timeout_s: float = Field(60, gt=0)


def _has_password(dsn: str) -> bool:
    return mask(dsn, set()) != dsn
