"""The layout is the map: rooms import one way, and no module imports itself in a circle.

Read with the standard library's ``ast`` from the source, every import counted —
at the top of a module or inside a function (a lazy import still ties two
modules together). docs/architecture.md draws the same rooms and their order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchflow", "drivers", "hydra_plugins", "mlflow_plugins")

# Bottom to top: a room may import only rooms listed before it (and itself).
LAYERS = (
    "secrets",  # benchflow/secrets.py: masking, used everywhere
    "network",  # benchflow/network.py: this node's address as other nodes reach it
    "workload",  # seeded keys, lengths, traces and prompts: what drivers draw requests from
    "load",  # load generation
    "results",  # what a trial leaves: schema, files, monitor, lineage, logs, identity
    "sut",  # servers under test, embedded servers, placement, endpoints
    "driver interface",  # drivers/base.py, discovery, checkpoint, download
    "drivers",  # drivers/<family>/...: leaves
    "tracking",  # MLflow
    "registry",  # targets in the model registry
    "config",  # compose, validate, targets merged in, limits
    "run",  # one trial
    "sweeps",  # many trials, Slurm
    "search",  # capacity search and saturation sweeps: probes are trials, maybe Slurm jobs
    "analysis",  # compare, promotion, catalogue, report
    "plugins",  # hydra_plugins, mlflow_plugins
    "cli",  # benchflow <command>
    "main",  # python -m benchflow
)
# What a driver may import besides the standard library and third-party packages.
DRIVER_MAY_IMPORT = {
    "drivers",
    "driver interface",
    "sut",
    "secrets",
    "network",
    "workload",
    "root",
}
# The interface itself may also read the result schema (a driver's io_schema).
INTERFACE_MAY_IMPORT = {"driver interface", "results", "workload", "root"}
DRIVER_INTERFACE = {"drivers.base", "drivers.discovery", "drivers.checkpoint", "drivers.download"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imported(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules ``mod`` imports (a name imported from a package that is
    a submodule counts as that submodule; a package's own ``__init__`` re-exporting
    its submodules is not an edge back from them)."""
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != mod and not mod.startswith(name + "."):
                out.add(name)
    # ``from pkg import sub`` also lists ``pkg``: keep the most precise target only
    return {m for m in out if not any(o.startswith(m + ".") for o in out)}


def room_of(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] in ("hydra_plugins", "mlflow_plugins"):
        return "plugins"
    if parts[0] == "drivers":
        if len(parts) == 1 or mod in DRIVER_INTERFACE:
            return "driver interface"
        return "drivers"
    if mod == "benchflow":
        return "root"
    if parts[1] == "__main__":
        return "main"
    return parts[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imported(m, p, known) for m, p in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_known_room(graph):
    unknown = sorted({room_of(m) for m in graph} - set(LAYERS) - {"root"})
    assert not unknown, (
        f"rooms not in LAYERS (add them in order, and to docs/architecture.md): {unknown}"
    )


def test_no_module_imports_itself_in_a_circle(graph):
    assert _cycles(graph) == []


def test_rooms_import_downwards_only(graph):
    rank = {room: i for i, room in enumerate(LAYERS)}
    rank["root"] = -1
    wrong = [
        f"{m} ({room_of(m)}) imports {t} ({room_of(t)})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if rank[room_of(t)] > rank[room_of(m)]
    ]
    assert wrong == [], "imports that go up the layers:\n" + "\n".join(wrong)


def test_drivers_import_only_the_driver_interface_and_their_helpers(graph):
    allowed = {"drivers": DRIVER_MAY_IMPORT, "driver interface": INTERFACE_MAY_IMPORT}
    wrong = [
        f"{m} imports {t}"
        for m, targets in sorted(graph.items())
        if room_of(m) in allowed
        for t in sorted(targets)
        if room_of(t) not in allowed[room_of(m)]
    ]
    assert wrong == [], "drivers are leaves: never the orchestration"


def test_the_core_never_names_a_driver(graph):
    wrong = [
        f"{m} imports {t}"
        for m, targets in sorted(graph.items())
        if room_of(m) not in ("drivers", "driver interface")
        for t in sorted(targets)
        if room_of(t) == "drivers"
    ]
    assert wrong == [], "the core finds drivers through entry points (drivers.discovery)"


def test_the_circle_check_sees_a_circle():
    """The check itself can fail: a made-up circle, lazy import included."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]
