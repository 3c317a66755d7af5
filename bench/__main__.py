"""Run every bench section and print one table: ``python -m bench [SECTION ...]``.

The whole run writes ``bench/out/results.md``; a run of chosen sections writes
``bench/out/results-<section>-....md``, so it never overwrites the full table.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import psutil

from bench.common import Row, Workspace


def sections() -> list[str]:
    """Every bench/<name>.py with a rows(ws) function, ordered by its ORDER (default 50)."""
    found = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem.startswith("_") or path.stem == "common":
            continue
        mod = importlib.import_module(f"bench.{path.stem}")
        if hasattr(mod, "rows"):
            found.append((getattr(mod, "ORDER", 50), path.stem))
    return [name for _, name in sorted(found)]


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def main(argv: list[str]) -> int:
    known = sections()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("section", nargs="*", help=f"sections to run (default: all): {known}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.section if n not in known]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; the sections are {known}")
    wanted = args.section or known
    ws = Workspace()
    rows: list[Row] = []
    t0 = time.time()
    for name in wanted:
        mod = importlib.import_module(f"bench.{name}")
        try:
            rows += mod.rows(ws)
        except Exception as exc:  # a broken section is a failed row, not a lost table
            rows.append(
                Row(
                    name,
                    f"section failed: {type(exc).__name__}: {exc}"[:200],
                    None,
                    "",
                    "runs",
                    False,
                )
            )
    lines = [
        f"benchflow bench — {time.strftime('%Y-%m-%d %H:%M')} — {platform.node()}, "
        f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()} — {time.time() - t0:.0f} s",
        "",
        "| section | figure | value | unit | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.ok is None else ("yes" if r.ok else "**NO**")
        lines.append(
            f"| {r.section} | {r.figure} | {fmt(r.value)} | {r.unit} | {r.target} | {met} |"
        )
    lines += ["", "Commands (each row's trial):", ""]
    lines += sorted({f"- `{r.how}`" for r in rows if r.how})
    text = "\n".join(lines) + "\n"
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    name = "results.md" if wanted == known else f"results-{'-'.join(wanted)}.md"
    (out / name).write_text(text)
    print(text)
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
