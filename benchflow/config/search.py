"""The ``search`` block: a capacity search or a saturation sweep instead of one trial.

``search.kind=none`` (the default) runs one trial as always. ``capacity`` finds
the largest rate (``search.over=rate``, open loop) or concurrency
(``search.over=concurrency``, closed loop) at which every SLO of ``search.slo``
holds; ``saturation`` runs guidellm's sweep (synchronous, throughput, then
``search.points`` rates between). The search itself lives in
:mod:`benchflow.search`; this module only says what a valid block is, so a bad
SLO string is refused (exit 2) before anything runs. docs/capacity.md has the
exact definitions.

An SLO is one string ``METRIC OP VALUE``: ``latency_ms.p99<=50``,
``errors.rate<=0.01``, ``ttft_ms.p99<=500``, ``quality.recall_at_10>=0.9``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# the statistics of a distribution an SLO may name (metrics.json's Distribution)
STATS = ("p50", "p90", "p95", "p99", "p999", "mean", "max")
PERCENTILE_Q = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99, "p999": 0.999}
# distributions with a top-level block in metrics.json (and their histogram's name)
TOP_DISTRIBUTIONS = {"latency_ms": "latency", "service_time_ms": "service", "ttfb_ms": "ttfb"}
# the names LLM users know, as benchflow records them
ALIASES = {"e2e_ms": "latency_ms", "e2el_ms": "latency_ms"}
SCALARS = ("errors.rate", "throughput")  # plain numbers of metrics.json
SCALAR_BLOCKS = ("quality", "rates", "extra", "resource")  # quality.recall_at_10, ...

_SLO_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<value>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*(?P<unit>ms)?\s*$"
)
SLO_FORMS = (
    "METRIC<=VALUE (or <, >=, >); METRIC is NAME_ms.STAT (NAME_ms: latency_ms, "
    "service_time_ms, ttfb_ms, ttft_ms, tpot_ms, itl_ms, ... ; STAT: "
    + ", ".join(STATS)
    + "), errors.rate, throughput, or quality.NAME / rates.NAME / extra.NAME; "
    "e.g. latency_ms.p99<=50"
)


@dataclass(frozen=True)
class Slo:
    """One parsed SLO: ``metric op value``; ``path`` is where metrics.json holds it."""

    text: str  # as normalised: "latency_ms.p99<=50"
    metric: str  # as the user wrote it
    op: str
    value: float
    path: tuple[str, ...]  # ("latency_ms", "p99"), ("distributions", "ttft", "p99"), ...
    hist: str | None  # the histogram of histograms.json it is read from (percentiles)
    stat: str | None  # p99, mean, ... for a distribution; None for a scalar

    @property
    def upper(self) -> bool:
        """True for a ceiling (``<=``, ``<``): larger is worse."""
        return self.op in ("<=", "<")

    @property
    def q(self) -> float | None:
        """The quantile (0.99 for p99) when the SLO is on a percentile."""
        return PERCENTILE_Q.get(self.stat or "")

    def holds(self, x: float) -> bool:
        return {"<=": x <= self.value, "<": x < self.value, ">=": x >= self.value}.get(
            self.op, x > self.value
        )


def parse_slo(text: str) -> Slo:
    """Parse ``METRIC OP VALUE``; raises ValueError saying what is allowed."""
    m = _SLO_RE.match(str(text))
    if not m:
        raise ValueError(f"not an SLO: expected {SLO_FORMS}")
    metric, op, value = m["metric"], m["op"], float(m["value"])
    parts = metric.split(".")
    head = ALIASES.get(parts[0], parts[0])
    path: tuple[str, ...]
    hist = stat = None
    if metric in SCALARS:
        path = tuple(parts)
    elif head in SCALAR_BLOCKS and len(parts) == 2:
        path = (head, parts[1])
    elif head.endswith("_ms") and len(parts) == 2 and len(head) > 3:
        stat = parts[1]
        if stat not in STATS:
            raise ValueError(f"unknown statistic {stat!r} of {head}: allowed {', '.join(STATS)}")
        if head in TOP_DISTRIBUTIONS:
            path, hist = (head, stat), TOP_DISTRIBUTIONS[head]
        else:  # a driver's own distribution: ttft_ms -> distributions.ttft (histogram x.ttft)
            name = head[:-3]
            path, hist = ("distributions", name, stat), f"x.{name}"
    else:
        raise ValueError(f"unknown metric {metric!r}: expected {SLO_FORMS}")
    if m["unit"] and stat is None:
        raise ValueError(f"{metric} is not in milliseconds")
    shown = f"{metric}{op}{value:g}"
    return Slo(shown, metric, op, value, path, hist, stat)


def _check_slo(text: str) -> str:
    parse_slo(text)
    return str(text).strip()


SloText = Annotated[str, AfterValidator(_check_slo)]


def quote_slo_overrides(argv: list[str]) -> list[str]:
    """Make ``search.slo=[latency_ms.p99<=50, errors.rate<=0.01]`` parse.

    Hydra's override grammar has no ``<`` or ``>`` in an unquoted value, so the
    documented spelling would be refused before benchflow sees it; an SLO list
    (or a single SLO) given unquoted is rewritten with each element quoted.
    Anything already quoted is left as it is.
    """
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+~") == "search.slo" and re.search(r"[<>]", value):
            body = value.strip()
            if not (body.startswith(("'", '"')) or re.search(r"\[\s*['\"]", body)):
                body = body[1:-1] if body.startswith("[") and body.endswith("]") else body
                items = [i.strip().strip("'\"") for i in body.split(",") if i.strip()]
                arg = f"{key}=[" + ",".join(f"'{i}'" for i in items) + "]"
        out.append(arg)
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchConfig(_Strict):
    """``search.*``: docs/capacity.md."""

    kind: Literal["none", "capacity", "saturation"] = Field(
        "none", description="none: one trial; capacity: the largest load within the SLOs"
    )
    over: Literal["rate", "concurrency"] = Field(
        "rate", description="rate: open loop (requests/s); concurrency: closed loop"
    )
    slo: list[SloText] = Field(
        default_factory=list, validate_default=True, description="e.g. [latency_ms.p99<=50]"
    )
    start: float | None = Field(
        None, gt=0, description="first probe; null: half the synchronous throughput (rate), 1"
    )
    growth: float = Field(2.0, gt=1, le=16, description="bracketing: x growth per probe")
    limit: float | None = Field(None, gt=0, description="never probe above this rate/concurrency")
    tolerance: float = Field(0.02, gt=0, lt=1, description="stop when (fail-pass)/pass <= this")
    max_trials: int = Field(12, ge=1, le=1000, description="probe trials at most, repeats counted")
    repeats: int = Field(3, ge=1, le=20, description="trials at most at one point near the SLO")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="of a percentile's interval")
    near: float = Field(
        0.2, ge=0, lt=1, description="a pass this close to an SLO's limit needs 2 trials"
    )
    arrival: Literal["poisson", "constant"] | None = Field(
        None, description="open-loop probes; null: the top-level arrival"
    )
    max_inflight: int = Field(
        64, ge=1, description="open-loop probes: requests in flight at most (their concurrency)"
    )
    points: int = Field(8, ge=1, le=100, description="saturation: rates between sync and max")
    saturation_concurrency: int = Field(
        64, ge=1, description="saturation: the closed-loop concurrency measuring the ceiling"
    )

    @field_validator("slo")
    @classmethod
    def _needs_slo(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("kind") == "capacity" and not v:
            raise ValueError("search=capacity needs at least one SLO, e.g. [latency_ms.p99<=50]")
        return v

    def slos(self) -> list[Slo]:
        return [parse_slo(s) for s in self.slo]

    @property
    def probe_count(self) -> int:
        """The most probe trials this search may run (what a Slurm budget counts)."""
        if self.kind == "saturation":
            return 2 + self.points * self.repeats
        return self.max_trials
