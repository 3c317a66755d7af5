"""Error classes of the ``postgres`` driver: SQLSTATEs and libpq messages to names."""

from __future__ import annotations

from drivers.base import DriverError

# SQLSTATEs (psycopg2.errorcodes) to the error classes of the result.
_SQLSTATE_CLASS = {
    "40001": "serialization_failure",
    "40P01": "deadlock",
    "57014": "timeout",  # query_canceled: statement_timeout
    "55P03": "timeout",  # lock_not_available: lock_timeout
    "25P03": "timeout",  # idle_in_transaction_session_timeout
    "57P01": "connection_lost",  # admin_shutdown (pg_ctl stop, pg_terminate_backend)
    "57P02": "connection_lost",  # crash_shutdown
    "57P03": "connection_lost",  # cannot_connect_now (starting up / shutting down)
    "28P01": "authentication_failed",
    "28000": "authentication_failed",
    "53300": "too_many_connections",
}


class ErrorClassifier:
    """``classify_error`` of :class:`~drivers.storage.postgres.driver.PostgresDriver`.

    A base listed before :class:`drivers.base.Driver`, so its ``super()`` is the
    Driver's own classification, for what is not PostgreSQL's.
    """

    def classify_error(self, exc: BaseException) -> str:
        if isinstance(exc, DriverError):
            return exc.error_class
        import psycopg2

        code = getattr(exc, "pgcode", None)
        if code:
            if code in _SQLSTATE_CLASS:
                return _SQLSTATE_CLASS[code]
            if code.startswith("08"):  # connection exceptions
                return "connection_lost"
            from psycopg2 import errorcodes

            return (errorcodes.lookup(code) or f"sqlstate_{code}").lower()
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return "connection_lost"  # no SQLSTATE: the client lost the server
        return super().classify_error(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect_error_class(exc: BaseException) -> str:
    """Connection failures carry no SQLSTATE; libpq's message says what happened."""
    code = getattr(exc, "pgcode", None)
    if code in _SQLSTATE_CLASS:
        return _SQLSTATE_CLASS[code]
    text = str(exc).lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return "authentication_failed"
    if "connection refused" in text:
        return "connection_refused"
    if "timeout expired" in text or "timed out" in text:
        return "connect_timeout"
    if "could not translate host name" in text or "name or service not known" in text:
        return "unknown_host"
    if "does not exist" in text:  # role or database
        return "authentication_failed" if "role" in text else "database_not_found"
    if "too many" in text and "connections" in text:
        return "too_many_connections"
    return "connection_failed"
