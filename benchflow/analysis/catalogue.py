"""The benchmark catalogue, in MLflow, so every team sees one list.

A **benchmark** (REQ 2.3) is a fixed experiment, or a parameterisable
experiment plus a workload: here, a service config (``conf/service/<name>``,
naming the experiment's driver) and the overrides that fix its workload. Its
*workload* is every setting of the experiment except the target's
(``Driver.target_fields``) and the execution details (mode, server, resources, isolation),
plus the top-level load keys given when it was registered: two runs belong to
the same benchmark when their experiment and workload are equal, whatever
target they measured.

Where it lives: an MLflow experiment (default ``benchflow-benchmarks``) in
which each registered definition is one run — tagged
``benchflow.role=benchmark``, its definition as params (``workload.*``) and as
a JSON tag, its description as the run's note. Runs are what MLflow offers for
immutable, searchable, annotated records visible in the UI and through
``mlflow.search_runs``; the model registry holds the benchmark *targets*
(DESIGN.md), so benchmarks stay out of it. A changed definition is a new run
(``revision`` + 1, with ``--replace``); the old one is tagged superseded, so
results stay attached to the definition they were measured under.

Which targets have results: runs of any other experiment whose
``benchflow.driver`` tag is the benchmark's experiment and whose params equal
its workload, grouped by their ``benchflow.target`` tag.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from benchflow.results.identity import NON_IDENTITY, flatten

DEFAULT_CATALOGUE = "benchflow-benchmarks"
ROLE_TAG, ROLE = "benchflow.role", "benchmark"
NAME_TAG = "benchflow.benchmark"
DEF_TAG = "benchflow.benchmark.definition"
STATE_TAG = "benchflow.benchmark.state"  # active | superseded
DEPRECATED_TAG = "benchflow.benchmark.deprecated"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
# Service settings that say how a trial runs, not what it measures.
EXECUTION_KEYS = ("name", "driver", "mode", "server", "resources", "isolation")
NO_TARGET = "(no target)"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def catalogue_name(name: str | None = None) -> str:
    return name or os.environ.get("BENCHFLOW_CATALOGUE") or DEFAULT_CATALOGUE


class CatalogueError(Exception):
    """A refused registration or an unknown benchmark (exit 2)."""


class Benchmark(BaseModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["fixed", "parameterised"]
    experiment: str  # the driver's entry-point name
    service: str  # the config-group option that loads it
    overrides: list[str] = Field(default_factory=list)  # as registered
    workload: dict[str, str] = Field(default_factory=dict)  # param key -> value
    experiment_version: str | None = None  # PEP 440 specifier the results must satisfy
    registered_with: str = ""  # package==version of the experiment at registration
    description: str = ""
    # From MLflow, not part of the definition:
    run_id: str | None = None
    revision: int = 1
    deprecated: str | None = None
    registered_at: float | None = None

    def definition(self) -> dict[str, Any]:
        return self.model_dump(
            include={"name", "kind", "experiment", "service", "workload", "experiment_version"}
        )


# -- defining ------------------------------------------------------------------
def define(
    name: str,
    service: str,
    overrides: list[str],
    config_dir: str | None = None,
    description: str = "",
    experiment_version: str | None = None,
) -> Benchmark:
    """Compose and validate a definition (raises ConfigError / CatalogueError)."""
    from benchflow.config import compose_trials
    from drivers import discovery

    if not NAME_RE.match(name):
        raise CatalogueError(f"benchmark name {name!r}: letters, digits, '_', '.', '-' only")
    for o in overrides:
        key = _key(o)
        if key == "service" or key.split(".")[0] in (*NON_IDENTITY, "target", "hydra"):
            raise CatalogueError(
                f"{key}: not part of a workload (give the service with --service; "
                "targets, limits and where results go are chosen when it runs)"
            )
    if experiment_version:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(experiment_version)
        except InvalidSpecifier:
            raise CatalogueError(
                f"--experiment-version {experiment_version!r}: not a PEP 440 specifier "
                "(e.g. '>=0.1,<0.2')"
            ) from None
    (spec,) = compose_trials(
        [f"service={service}", *overrides], False, config_dir, open_target=True
    )
    cls = spec.driver_cls
    info = discovery.info(spec.service.driver)
    workload: dict[str, str] = {}
    for key, value in flatten(spec.resolved["service"], "service").items():
        field_name = key.split(".")[1]
        if field_name in EXECUTION_KEYS or field_name in cls.target_fields:
            continue
        workload[key] = str(value)
    touched = [
        _key(o)
        for o in overrides
        if _key(o).startswith("service.") and _key(o).split(".")[1] not in cls.target_fields
    ]
    if cls.fixed and touched:
        raise CatalogueError(
            f"{touched[0]}: {info.name} is a fixed experiment (its workload is built in); "
            "register it without workload overrides"
        )
    for o in overrides:
        key = _key(o)
        if key.startswith("service."):
            if key.split(".")[1] in cls.target_fields:
                raise CatalogueError(f"{key}: the target varies between runs; it is not a workload")
            continue
        workload[key] = str(_select(spec.resolved, key))
    return Benchmark(
        name=name,
        kind="fixed" if cls.fixed else "parameterised",
        experiment=info.name,
        service=service,
        overrides=list(overrides),
        workload=workload,
        experiment_version=experiment_version,
        registered_with=f"{info.package}=={info.version}",
        description=description,
    )


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _select(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


# -- storing -------------------------------------------------------------------
def register(c, bench: Benchmark, catalogue: str, replace: bool = False) -> tuple[Benchmark, str]:
    """Record ``bench``; returns it as stored and ``created`` | ``unchanged`` | ``replaced``."""
    from mlflow.entities import Param, RunTag

    from benchflow.tracking import ensure_experiment

    exp_id = ensure_experiment(c, catalogue)
    current = _current(c, exp_id, bench.name)
    status = "created"
    if current is not None:
        if current.definition() == bench.definition():
            return current, "unchanged"
        if not replace:
            raise CatalogueError(
                f"benchmark {bench.name!r} is registered with another definition "
                f"(revision {current.revision}, run {current.run_id}); "
                "pass --replace to register a new revision"
            )
        status = "replaced"
        bench.revision = current.revision + 1
    bench.registered_at = time.time()
    tags = {
        ROLE_TAG: ROLE,
        NAME_TAG: bench.name,
        STATE_TAG: "active",
        "benchflow.benchmark.kind": bench.kind,
        "benchflow.benchmark.revision": str(bench.revision),
        "benchflow.driver": bench.experiment,
        NOTE_TAG: bench.description or f"{bench.kind} benchmark of {bench.experiment}",
        DEF_TAG: json.dumps(bench.model_dump(exclude={"run_id", "deprecated"})),
    }
    run = c.create_run(exp_id, run_name=bench.name, tags=tags)
    params = {
        "experiment": bench.experiment,
        "service": bench.service,
        "kind": bench.kind,
        "experiment_version": bench.experiment_version or "any",
        "registered_with": bench.registered_with,
        **{f"workload.{k}": v[:6000] for k, v in bench.workload.items()},
    }
    c.log_batch(
        run.info.run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    c.set_terminated(run.info.run_id, "FINISHED")
    if current is not None:
        c.set_tag(current.run_id, STATE_TAG, "superseded")
        c.set_tag(current.run_id, "benchflow.benchmark.superseded_by", run.info.run_id)
    bench.run_id = run.info.run_id
    return bench, status


def deprecate(c, name: str, reason: str, catalogue: str) -> Benchmark:
    exp = c.get_experiment_by_name(catalogue)
    current = _current(c, exp.experiment_id, name) if exp else None
    if current is None:
        raise CatalogueError(f"no benchmark {name!r} in {catalogue}")
    c.set_tag(current.run_id, DEPRECATED_TAG, reason or "deprecated")
    current.deprecated = reason or "deprecated"
    return current


def benchmarks(c, catalogue: str, include_superseded: bool = False) -> list[Benchmark]:
    """The registered benchmarks (the active revision of each, by name)."""
    exp = c.get_experiment_by_name(catalogue)
    if exp is None:
        return []
    filt = f"tags.`{ROLE_TAG}` = '{ROLE}'"
    if not include_superseded:
        filt += f" and tags.`{STATE_TAG}` = 'active'"
    out, seen = [], set()
    for run in _all_runs(c, [exp.experiment_id], filt):
        b = _from_run(run)
        if include_superseded or b.name not in seen:
            seen.add(b.name)
            out.append(b)
    return sorted(out, key=lambda b: (b.name, -b.revision))


def get(c, name: str, catalogue: str) -> Benchmark:
    exp = c.get_experiment_by_name(catalogue)
    current = _current(c, exp.experiment_id, name) if exp else None
    if current is None:
        names = ", ".join(b.name for b in benchmarks(c, catalogue)) or "none"
        raise CatalogueError(f"no benchmark {name!r} in {catalogue}; registered: {names}")
    return current


def _current(c, exp_id: str, name: str) -> Benchmark | None:
    filt = (
        f"tags.`{ROLE_TAG}` = '{ROLE}' and tags.`{NAME_TAG}` = '{_quote(name)}' "
        f"and tags.`{STATE_TAG}` = 'active'"
    )
    runs = c.search_runs([exp_id], filter_string=filt, order_by=["start_time DESC"], max_results=1)
    return _from_run(runs[0]) if runs else None


def _from_run(run) -> Benchmark:
    d = json.loads(run.data.tags[DEF_TAG])
    b = Benchmark.model_validate(d)
    b.run_id = run.info.run_id
    b.deprecated = run.data.tags.get(DEPRECATED_TAG)
    return b


def _all_runs(c, exp_ids: list[str], filt: str):
    token = None
    while True:
        page = c.search_runs(
            exp_ids,
            filter_string=filt,
            order_by=["start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _quote(value: str) -> str:
    return value.replace("'", "")  # names are [A-Za-z0-9_.-]; never quoted


# -- results -------------------------------------------------------------------
@dataclass
class TargetResults:
    target: str
    runs: int = 0
    finished: int = 0
    valid: int = 0
    versions: set[str] = field(default_factory=set)  # experiment versions seen
    last: float = 0.0  # epoch seconds of the latest run

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "runs": self.runs,
            "finished": self.finished,
            "valid": self.valid,
            "versions": sorted(self.versions),
            "last": self.last,
        }


def results(c, bench: Benchmark, catalogue: str) -> list[TargetResults]:
    """Which targets have results for ``bench``, with counts."""
    exp_ids = [e.experiment_id for e in _experiments(c) if e.name != catalogue]
    if not exp_ids:
        return []
    clauses = [f"tags.`benchflow.driver` = '{bench.experiment}'"]
    for k, v in bench.workload.items():
        if "'" not in v and "`" not in k:
            clauses.append(f"params.`{k}` = '{v}'")
    spec = None
    if bench.experiment_version:
        from packaging.specifiers import SpecifierSet

        spec = SpecifierSet(bench.experiment_version)
    by_target: dict[str, TargetResults] = {}
    for run in _all_runs(c, exp_ids, " and ".join(clauses)):
        params, tags = run.data.params, run.data.tags
        if any(params.get(k) != v for k, v in bench.workload.items()):
            continue  # what the server-side filter could not express
        version = tags.get("benchflow.driver_package", "").partition("==")[2]
        if spec is not None and (not version or version not in spec):
            continue
        t = tags.get("benchflow.target") or NO_TARGET
        r = by_target.setdefault(t, TargetResults(t))
        r.runs += 1
        r.finished += run.info.status == "FINISHED"
        r.valid += tags.get("benchflow.valid") == "true"
        if version:
            r.versions.add(version)
        r.last = max(r.last, (run.info.end_time or run.info.start_time or 0) / 1000)
    return sorted(by_target.values(), key=lambda r: (r.target == NO_TARGET, r.target))


def _experiments(c):
    from mlflow.entities import ViewType

    token = None
    while True:
        page = c.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return
