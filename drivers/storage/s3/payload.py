"""Object contents: generated, incompressible, streamed without being held in memory."""

from __future__ import annotations

import io
import random
import zlib

from drivers.storage.s3.settings import MiB

_BLOCK = 4 * MiB  # the random block every payload is a window of


class Payload:
    """Deterministic, incompressible object contents without holding an object in memory.

    The bytes of the object with ``offset`` are the cyclic sequence of one random
    block starting at ``offset``; any stretch is a slice of the block doubled.
    """

    def __init__(self, seed: int, block: int = _BLOCK) -> None:
        data = random.Random(seed).randbytes(block)
        self.seed, self.block = seed, block
        self._double = memoryview(data + data)

    def __reduce__(self):
        # A memoryview cannot be pickled: client processes (clients=N) regenerate the
        # same bytes from the seed instead of receiving them.
        return (Payload, (self.seed, self.block))

    def chunks(self, offset: int, size: int, chunk: int):
        """The object's bytes in pieces of at most ``chunk`` (memoryviews, no copies)."""
        pos, left = offset % self.block, size
        while left > 0:
            n = min(chunk, left, self.block)
            yield self._double[pos : pos + n]
            pos = (pos + n) % self.block
            left -= n

    def crc32(self, offset: int, size: int) -> int:
        crc = 0
        for piece in self.chunks(offset, size, self.block):
            crc = zlib.crc32(piece, crc)
        return crc

    def reader(self, offset: int, size: int) -> PayloadReader:
        return PayloadReader(self, offset, size)


class PayloadReader(io.RawIOBase):
    """A seekable file-like body over a :class:`Payload` window (what boto3 uploads)."""

    def __init__(self, payload: Payload, offset: int, size: int) -> None:
        self._p, self._offset, self._size, self._pos = payload, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + pos))
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._size - self._pos, self._p.block)
        if n <= 0:
            return 0
        start = (self._offset + self._pos) % self._p.block
        buf[:n] = self._p._double[start : start + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        n = min(size, self._size - self._pos, self._p.block)
        if n <= 0:
            return b""
        start = (self._offset + self._pos) % self._p.block
        self._pos += n
        return bytes(self._p._double[start : start + n])

    def __len__(self) -> int:
        return self._size
