"""Server-side figures from a Prometheus ``/metrics`` endpoint (vLLM's), over the
measured window.

Scraped when the window opens, every ``interval_s`` during it, and when it
closes. Counters are differenced (tokens generated, prefix-cache hits,
preemptions), gauges summarised by mean and max over the scrapes (requests
running and waiting, KV-cache usage), histograms reduced to the mean of the
observations made in the window. Label sets are summed (one server, one model).
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("benchflow.drivers.server_metrics")


def scrape(url: str, prefix: str, timeout_s: float = 5.0) -> dict[str, tuple[str, float]]:
    """``{name: (type, value)}`` of the families whose name starts with ``prefix``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode("utf-8", errors="replace")
    out: dict[str, tuple[str, float]] = {}
    sums: dict[str, float] = defaultdict(float)
    kinds: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith(prefix):
            continue
        for s in fam.samples:
            if fam.type == "counter" and s.name.endswith("_created"):
                continue  # a timestamp, not a count
            if fam.type in ("histogram", "summary") and not s.name.endswith(("_sum", "_count")):
                continue
            sums[s.name] += s.value
            kinds[s.name] = fam.type
    for name, value in sums.items():
        out[name] = (kinds[name], value)
    return out


class MetricsWatch:
    """Scrapes ``url`` in a thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, url: str, prefix: str = "vllm:", interval_s: float = 1.0) -> None:
        self.url, self.prefix, self.interval_s = url, prefix, interval_s
        self._first: dict[str, tuple[str, float]] | None = None
        self._gauges: dict[str, list[float]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        # the last scrape's gauges (running, waiting, KV-cache use), for the series
        self.latest: dict[str, float] = {}

    def _scrape(self) -> dict[str, tuple[str, float]] | None:
        try:
            snap = scrape(self.url, self.prefix)
        except Exception as exc:  # a missing figure, never a failed trial
            self.failures += 1
            log.warning("could not scrape %s: %s", self.url, exc)
            return None
        strip = len(self.prefix)
        for name, (kind, value) in snap.items():
            if kind == "gauge":
                self._gauges[name].append(value)
        self.latest = {n[strip:]: v for n, (kind, v) in snap.items() if kind == "gauge"}
        return snap

    def start(self) -> None:
        self._first = self._scrape()
        self._thread = threading.Thread(target=self._run, name="bf-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._scrape()

    def stop(self) -> dict[str, float]:
        """Figures for the result's ``extra`` block, named ``server.<metric>.<stat>``."""
        self._stop.set()
        if self._thread:
            self._thread.join(self.interval_s + 6)
        last = self._scrape()
        if self._first is None or last is None:
            return {}
        out: dict[str, float] = {}
        strip = len(self.prefix)
        for name, values in self._gauges.items():
            key = f"server.{name[strip:]}"
            out[f"{key}.mean"] = sum(values) / len(values)
            out[f"{key}.max"] = max(values)
        for name, (kind, value) in last.items():
            before = self._first.get(name, (kind, 0.0))[1]
            if kind == "counter":
                out[f"server.{name[strip:]}.delta"] = value - before
            elif name.endswith("_sum"):
                base = name[: -len("_sum")]
                n = (
                    last.get(base + "_count", (kind, 0.0))[1]
                    - self._first.get(base + "_count", (kind, 0.0))[1]
                )
                if n > 0:
                    out[f"server.{base[strip:]}.mean"] = (value - before) / n
                    out[f"server.{base[strip:]}.count"] = n
        hits = out.get("server.prefix_cache_hits_total.delta")
        queries = out.get("server.prefix_cache_queries_total.delta")
        if hits is not None and queries:
            out["server.prefix_cache_hit_rate"] = hits / queries
        return out
