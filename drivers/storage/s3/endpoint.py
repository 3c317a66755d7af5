"""The endpoint outside the measured requests: boto3 clients, the bucket, clean-up."""

from __future__ import annotations

from typing import Any

from drivers.base import DriverError
from drivers.storage.s3.errors import _describe


class Endpoint:
    """Clients and the bucket: a base of :class:`~drivers.storage.s3.driver.S3Driver`,
    whose ``settings``, ``endpoint_url``, ``_creds``, ``bucket`` and ``base`` it uses."""

    def _client(self, pool: int, retries: int | None = None):
        import boto3
        from botocore.config import Config

        s = self.settings
        config = Config(
            region_name=s.region,
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            retries={"max_attempts": s.retries if retries is None else retries, "mode": "standard"},
            max_pool_connections=max(10, pool),
            s3={
                "addressing_style": s.addressing_style,
                "payload_signing_enabled": s.payload_signing,
            },
            request_checksum_calculation=s.client_checksums,
            response_checksum_validation=s.client_checksums,
        )
        session = (
            boto3.session.Session(profile_name=s.profile) if s.profile else boto3.session.Session()
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config, **self._creds)

    def _ensure_bucket(self, client) -> None:
        s = self.settings
        if self.bucket is None:
            self.bucket = f"benchflow-{self.trial.trial_id[:16]}"
        try:
            if s.bucket is None or s.mode == "embedded":
                kwargs: dict[str, Any] = {"Bucket": self.bucket}
                if s.region != "us-east-1":  # AWS wants the region said outside us-east-1
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
                try:
                    client.create_bucket(**kwargs)
                    self._made_bucket = s.bucket is None
                except Exception as exc:
                    if self.classify_error(exc) not in (
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    ):
                        raise
            # Proves the credentials and the bucket before any load runs.
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except Exception as exc:
            raise DriverError(
                f"S3 bucket {self.bucket!r} at {self.endpoint_url or 'AWS'}: {_describe(exc)}",
                self.classify_error(exc),
            ) from None

    def _cleanup(self) -> None:
        client = self._client(pool=4)
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.base}/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        if self._made_bucket:
            client.delete_bucket(Bucket=self.bucket)
