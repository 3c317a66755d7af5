"""``s3``: PUT, GET, DELETE, LIST and HEAD against an S3-compatible endpoint (boto3).

Objects are streamed both ways: uploads read from a generated, incompressible
payload (a window over one random block, different for every key) and
downloads are consumed in ``chunk_size`` pieces, so memory stays at a few
chunks per worker whatever the object size (1 KB .. 1 GB and beyond). Objects of
``multipart_threshold`` and more are uploaded in parts of ``part_size``,
``part_concurrency`` at a time, each part timed (``distributions.part``).

GET reports the time to the first byte of the body (``ttfb_ms``) and to the
last (``latency_ms``); a fraction ``verify_fraction`` of GETs recomputes the
object's CRC-32 and compares it with the one computed when it was written (a
mismatch is error class ``checksum_mismatch``). Failed requests are counted by
their S3 error code (``NoSuchKey``, ``SlowDown``, ``AccessDenied``, ...) or by
``connection_error`` / ``timeout``. Retries are off by default: a benchmark
counts errors instead of hiding them in latency.

GET, HEAD, DELETE and LIST work on a pool of ``objects`` objects written during
setup (phase ``prepare``); PUT writes keys of its own, cycling over ``objects``
keys so disk use stays bounded. DELETE consumes the pool: size it to the number
of deletes (``requests=N``).

With a mix (``mix={get: 0.7, put: 0.2, delete: 0.1}``) each request does its own
class's operation. GET, HEAD and LIST read the pool, which nothing in the mix
changes; PUT and DELETE share a write space of ``objects`` keys per process
(:class:`~drivers.storage.s3.keys.WriteSpace`): deletes remove what puts wrote, so
a delete never makes a GET fail. The headline is then requests/s; each class's
MiB/s is in its own figures. A skewed access law (``access.distribution``) picks
the objects GET, HEAD and PUT touch, one key stream per worker; the keys each
class touched in the window are summarised in ``extra`` (``s3.keys.<class>.*``)
and ``custom.json`` (``s3.keys``).

``mode=embedded`` starts a throwaway server (:class:`benchflow.sut.embedded.EmbeddedS3`)
with generated credentials; ``mode=server`` uses ``endpoint_url`` (null: AWS)
and boto3's own credential chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws``): credentials are never part of the config.
"""

from drivers.storage.s3.driver import S3Driver
from drivers.storage.s3.payload import Payload, PayloadReader
from drivers.storage.s3.settings import S3Settings

__all__ = ["Payload", "PayloadReader", "S3Driver", "S3Settings"]
