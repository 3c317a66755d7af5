"""Throwaway servers benchflow starts for itself: PostgreSQL and an S3-compatible store.

Each is a context manager that starts a real server on a free loopback port in
a temporary directory, waits until it answers, and always removes it again
(at ``__exit__``, on :meth:`stop`, and at interpreter exit)::

    from benchflow.sut.embedded import EmbeddedPostgres, EmbeddedS3

    with EmbeddedPostgres() as pg:          # pg.dsn, pg.url, pg.sqlalchemy_url
        ...
    with EmbeddedS3() as s3:                # s3.endpoint_url, s3.access_key, s3.environ()
        s3.create_bucket("artifacts")

Drivers use them for ``mode=embedded``; tests and ``benchflow server
--embedded-db`` reuse them.
"""

from benchflow.sut.embedded.postgres import EmbeddedPostgres, PostgresNotInstalled
from benchflow.sut.embedded.s3 import EmbeddedS3, S3ServerNotInstalled

__all__ = ["EmbeddedPostgres", "EmbeddedS3", "PostgresNotInstalled", "S3ServerNotInstalled"]
