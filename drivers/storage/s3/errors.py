"""Error classes of the ``s3`` driver (S3 error codes, botocore's exceptions)."""

from __future__ import annotations

from drivers.base import DriverError


class ErrorClassifier:
    """``classify_error`` of :class:`~drivers.storage.s3.driver.S3Driver`.

    A base listed before :class:`drivers.base.Driver`, so its ``super()`` is the
    Driver's own classification, for what is not S3's or botocore's.
    """

    def classify_error(self, exc: BaseException) -> str:
        if isinstance(exc, DriverError):
            return exc.error_class
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", "") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code.isdigit() or not code:  # HEAD responses have no body to name the error
                code = {403: "AccessDenied", 404: "NotFound"}.get(
                    status or int(code or 0), f"HTTP{code or status}"
                )
            return code
        if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
            return "timeout"
        if isinstance(
            exc, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.ConnectionError
        ):
            return "connection_error"
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return "NoCredentials"
        if isinstance(exc, bx.ProfileNotFound):
            return "ProfileNotFound"
        return super().classify_error(exc)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
