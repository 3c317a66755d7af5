"""Reports of a sweep or an experiment: ``reports/<scenario>/report.html`` (figures
embedded, opens offline and in MLflow's artifact view) and ``report.md`` (figures
as files beside it), logged to the sweep's parent run.

    from benchflow.analysis.report import build_report
    out = build_report(client, sweep="20250101-120000-000000")
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from benchflow.analysis.report.data import ReportError, TrialSet, load

__all__ = ["ReportError", "ReportOutput", "build_report"]


@dataclass
class ReportOutput:
    html: Path
    markdown: Path
    figures: list[Path]
    trials: int
    logged_to: str | None
    seconds: float


def build_report(
    client,
    sweep: str | None = None,
    experiment: str | None = None,
    results_dir: str | Path = "results",
    out_dir: str | Path = "reports",
    log: bool = True,
) -> ReportOutput:
    """Write the HTML and Markdown report and log both to the parent run."""
    from benchflow.analysis.report import figures as figs
    from benchflow.analysis.report import tables

    t0 = time.perf_counter()
    ts = load(client, sweep, experiment, results_dir)
    target = Path(out_dir) / ts.scenario
    (target / "figures").mkdir(parents=True, exist_ok=True)
    made = figs.make_all(ts)
    fig_files = []
    for f in made:
        p = target / "figures" / f"{f.name}.png"
        p.write_bytes(f.png)
        fig_files.append(p)
    summary = tables.summaries(ts)
    sbs, sbs_notes = tables.side_by_side(ts)
    ctx = _context(ts, made, summary, sbs, sbs_notes)
    html = target / "report.html"
    html.write_text(_render_html(ctx))
    md = target / "report.md"
    md.write_text(_render_md(ctx))
    logged = None
    if log:
        logged = _log(client, ts, html, md, fig_files)
    return ReportOutput(html, md, fig_files, len(ts.runs), logged, time.perf_counter() - t0)


def _context(ts: TrialSet, made, summary, sbs, sbs_notes) -> dict:
    from benchflow.analysis.compare import Settings

    runs = ts.runs
    valid = ts.finished
    problems = []
    for _, r in runs[~runs.index.isin(valid.index)].iterrows():
        why = r.get("tags.benchflow.error") or r.get("tags.benchflow.invalid_reasons") or ""
        problems.append(
            {
                "trial": r["tags.benchflow.trial_id"][:12],
                "subject": r["subject"],
                "config": r["config"],
                "status": r["status"],
                "why": str(why)[:300],
            }
        )
    configs = []
    order = runs.sort_values(["subject", "config", "tags.benchflow.repetition"], na_position="last")
    for _, r in order.iterrows():
        configs.append(
            {
                "trial": r["tags.benchflow.trial_id"],
                "subject": r["subject"],
                "config": r["config"],
                "repetition": r.get("tags.benchflow.repetition", ""),
                "yaml": ts.files[r["run_id"]].config_yaml(),
            }
        )
    return {
        "title": f"benchflow report: {ts.title}",
        "scenario": ts.scenario,
        "n_trials": len(runs),
        "n_valid": len(valid),
        "n_failed": len(runs) - len(valid),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "parent": ts.parent_run_id,
        "figures": [
            {
                "name": f.name,
                "title": f.title,
                "caption": f.caption,
                "b64": base64.b64encode(f.png).decode(),
            }
            for f in made
        ],
        "tables": summary,
        "sbs": sbs,
        "sbs_notes": sbs_notes,
        "settings": Settings(resamples=1000),
        "problems": problems,
        "configs": configs,
    }


def _render_html(ctx: dict) -> str:
    import jinja2

    from benchflow.analysis.compare import fmt, fmt_ci, fmt_design, fmt_mde

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("template.html.j2").render(
        fmt=fmt, fmt_ci=fmt_ci, fmt_design=fmt_design, fmt_mde=fmt_mde, **ctx
    )


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def _render_md(ctx: dict) -> str:
    from benchflow.analysis.compare import fmt, fmt_ci, fmt_design, fmt_mde

    lines = [
        f"# {ctx['title']}",
        "",
        f"scenario **{ctx['scenario']}** · {ctx['n_trials']} trials ({ctx['n_valid']} valid, "
        f"{ctx['n_failed']} failed or invalid) · generated {ctx['generated']}",
        "",
        "## Summary",
        "",
        "Medians over repetitions; **best**, _median_ and ~~worst~~ marked per column.",
    ]
    style = {"best": "**{}**", "median": "_{}_", "worst": "~~{}~~", "": "{}"}
    for t in ctx["tables"]:
        rows = [
            [style[m].format(c) if c not in ("", "–") else c for c, m in zip(r, mk, strict=True)]
            for r, mk in zip(t.rows, t.marks, strict=True)
        ]
        lines += ["", f"### {t.title}", "", *_md_table(t.columns, rows)]
    lines += ["", "## Side by side under identical load", ""]
    lines += [f"Note: {n}" for n in ctx["sbs_notes"]]
    if ctx["sbs"]:
        header = ["comparison", "metric", "n", "design", "best", "subject", "ratio", "CI"]
        header += ["MDE", "p Welch", "p MWU", "q", "verdict", "note"]
        rows = [
            [
                r.config,
                r.metric,
                f"{r.n_baseline}/{r.n_candidate}",
                fmt_design(r),
                fmt(r.median_baseline),
                fmt(r.median_candidate),
                fmt(r.ratio),
                fmt_ci(r),
                fmt_mde(r.mde),
                fmt(r.p_welch),
                fmt(r.p_mannwhitney),
                fmt(r.p_adjusted),
                r.verdict,
                r.note,
            ]
            for r in ctx["sbs"]
        ]
        lines += _md_table(header, rows)
    lines += ["", "## Figures", ""]
    for f in ctx["figures"]:
        lines += [
            f"### {f['title']}",
            "",
            f"![{f['title']}](figures/{f['name']}.png)",
            "",
            f["caption"],
            "",
        ]
    if ctx["problems"]:
        lines += ["## Failed and invalid trials", ""]
        lines += _md_table(
            ["trial", "subject", "configuration", "status", "why"],
            [
                [p["trial"], p["subject"], p["config"], p["status"], p["why"]]
                for p in ctx["problems"]
            ],
        )
    lines += ["", "## Configuration of every trial", ""]
    for c in ctx["configs"]:
        lines += [
            f"<details><summary>{c['trial']} · {c['subject']} · {c['config']}</summary>",
            "",
            "```yaml",
            c["yaml"].rstrip(),
            "```",
            "</details>",
            "",
        ]
    return "\n".join(lines) + "\n"


def _log(client, ts: TrialSet, html: Path, md: Path, fig_files: list[Path]) -> str:
    """Log the report to the sweep's parent run (or a report run in the experiment)."""
    run_id = ts.parent_run_id
    if run_id is None:
        run = client.create_run(
            ts.experiment_id,
            run_name=f"report {ts.title}",
            tags={"benchflow.role": "report", "benchflow.scenario": ts.scenario},
        )
        run_id = run.info.run_id
        client.set_terminated(run_id, "FINISHED")
    client.log_artifact(run_id, str(html), "report")
    client.log_artifact(run_id, str(md), "report")
    for f in fig_files:
        client.log_artifact(run_id, str(f), "report/figures")
    return run_id
