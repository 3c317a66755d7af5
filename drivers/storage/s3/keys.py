"""Which object a request touches: a mix's write space, and the keys each class hit."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

_TOP = 10  # hottest keys listed per class in custom.json


class WriteSpace:
    """This process's keys for the puts and deletes of a mix: ``objects`` keys
    ``<base>/mix/<tag>/<j>``, apart from the pool that GET, HEAD and LIST read.

    Why a space of their own: a delete in the pool would make a later GET of that
    object fail (``NoSuchKey``), and re-writing it inside the GET would time a PUT
    as a GET. So a mix's deletes remove objects its puts wrote (the least recently
    written first), and its puts re-create deleted keys first. A delete that finds
    none (deletes outweigh puts, or the trial's first requests) deletes a key that
    holds nothing, which S3 answers as it answers any delete (204); such deletes are
    counted (``missing_deletes``) rather than failed, since nothing went wrong.

    Why no two requests hold one key at once: two concurrent writes of one key, or a
    write and a delete, are a race each server settles its own way (rclone answers one
    of them ``InternalError``), which measures the race, not the operation. So a key
    is *free* (never written, or deleted), *live* (written; kept least recently
    written first) or held by the one request in flight on it.

    ``tag`` is random, per process: client processes (``clients=N``) each get a
    space of their own, so none of them deletes or overwrites another's key in flight.
    """

    def __init__(self, n: int, tag: str) -> None:
        self.n, self.tag = n, tag
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(n))
        self._live: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()
        self.redirects = 0  # puts whose access-law key was held: another key written
        self.missing_deletes = 0  # deletes of a key that held no object

    def claim_put(self, want: int | None) -> int | None:
        """The key a put writes: ``want`` (the access law's pick) unless a request
        holds it; else a free key, else the least recently written; None: all held."""
        with self._lock:
            if want is not None:
                for keys in (self._free, self._live):
                    if want in keys:
                        del keys[want]
                        return want
                self.redirects += 1
            for keys in (self._free, self._live):
                if keys:
                    return keys.popitem(last=False)[0]
            return None

    def wrote(self, j: int) -> None:
        """Release a put's key: it is now the most recently written.

        Also after a failed put: the object may exist (the old one, or the new one if
        only the reply was lost), and deleting a missing key is not an error in S3.
        """
        with self._lock:
            self._live[j] = None

    def claim_delete(self) -> int | None:
        """The key a delete removes: the least recently written; none written, a free
        one (counted in ``missing_deletes``); None: every key is held."""
        with self._lock:
            if self._live:
                return self._live.popitem(last=False)[0]
            if self._free:
                self.missing_deletes += 1
                return self._free.popitem(last=False)[0]
            return None

    def deleted(self, j: int) -> None:
        """Release a delete's key as free (after a failed delete too: a later put
        overwrites whatever is left)."""
        with self._lock:
            self._free[j] = None

    @property
    def live(self) -> int:
        return len(self._live)


def key_figures(hits: dict[str, Counter]) -> tuple[dict[str, float], dict[str, dict]]:
    """How skewed each class's keys were: ``extra`` figures and ``custom.json`` detail.

    ``hits``: class -> key index -> requests. Per class: the requests counted, the
    distinct keys, the hottest key's share of the requests, and the hottest keys.
    """
    extra: dict[str, float] = {}
    custom: dict[str, dict] = {}
    for cls, counts in sorted(hits.items()):
        total = sum(counts.values())
        if not total:
            continue
        top = counts.most_common(_TOP)
        extra[f"s3.keys.{cls}.distinct"] = float(len(counts))
        extra[f"s3.keys.{cls}.hottest_share"] = top[0][1] / total
        custom[cls] = {
            "requests": total,
            "distinct": len(counts),
            "top": [[int(k), int(n)] for k, n in top],
        }
    return extra, custom
