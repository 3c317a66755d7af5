"""`benchflow report` on the lab's real sweep, opened in headless Chromium; and the
notebook notebooks/compare_runs.ipynb executed (nbclient) against the same runs."""

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO, require

from .conftest import cli

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _report(lab) -> Path:
    (sweep_dir,) = list((lab.results / "targets" / "_sweeps").iterdir())
    html = lab.path / "reports" / "targets" / "report.html"
    if not html.exists():
        proc = cli(lab, "report", str(sweep_dir.relative_to(lab.path)))
        assert proc.returncode == 0, proc.stderr
        assert "report of 9 trials" in proc.stdout
    return html


def test_report_files_and_mlflow_artifacts(lab):
    html = _report(lab)
    md = html.with_name("report.md")
    text, mdtext = html.read_text(), md.read_text()
    for section in (
        "Summary",
        "Side by side under identical load",
        "Latency–throughput",
        "Latency CDFs",
        "Per-second series",
        "Resource use",
        "Configuration of every trial",
    ):
        assert section in text and section in mdtext, section
    assert "sleepy/1" in text and "sleepy/3" in text
    assert text.count('class="report-figure"') == len(list(html.parent.glob("figures/*.png")))
    assert "http://" not in text and "https://" not in text  # nothing to fetch: opens offline
    assert text.count("<details>") == 9 and "service_ms: 3" in text  # every trial's config
    assert 'td class="  best"' in text.replace("text ", "") or 'class=" best"' in text
    import mlflow

    runs = lab.runs("targets")
    parent = runs[runs["tags.benchflow.role"] == "sweep"]["run_id"].iloc[0]
    c = mlflow.MlflowClient(lab.tracking_uri)
    arts = {a.path for a in c.list_artifacts(parent, "report")}
    assert {"report/report.html", "report/report.md", "report/figures"} <= arts


def test_report_opens_in_headless_chromium_with_every_figure_loaded(lab, tmp_path):
    html = _report(lab)
    browser = _chromium()
    require(browser is not None, "Debian chromium (scripts/apt-packages.txt)")
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--virtual-time-budget=5000", "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    import re

    total = int(re.search(r'data-figures-total="(\d+)"', dom.stdout).group(1))
    loaded = int(re.search(r'data-figures-loaded="(\d+)"', dom.stdout).group(1))
    assert total >= 4 and loaded == total, (loaded, total)
    assert 'class="bad"' not in dom.stdout  # the page's own check found no broken figure
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, "--window-size=1200,1600", f"--screenshot={shot}", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.std() > 0.05, "the page is blank"
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_report_of_an_unknown_sweep_is_a_clear_error(lab):
    proc = cli(lab, "report", "no-such-sweep")
    assert proc.returncode == 2 and "no runs with that benchflow.sweep_id" in proc.stderr


def test_the_compare_notebook_runs_against_the_lab(lab):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    env = {
        "MLFLOW_TRACKING_URI": lab.tracking_uri,
        "BENCHFLOW_EXPERIMENT": "targets",
        "BENCHFLOW_BASELINE": "sleepy@champion",
        "BENCHFLOW_CANDIDATE": "sleepy/2",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(lab.path)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "10 runs, 9 trials" in outputs  # 9 trials + the sweep's parent run
    assert "baseline sleepy@champion" in outputs and "candidate sleepy/2" in outputs
    assert "better" in outputs  # the comparison found the faster target
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert images, "the plot cell draws a figure"


def test_vector_and_llm_figures_appear_when_the_trials_have_their_data(tmp_path):
    """Synthetic trials (benchflow.analysis.synthetic) with recall@10 and first-token times: the
    recall–QPS and TTFT/ITL figures, scaling curves and side-by-side rows appear."""
    from benchflow import tracking
    from benchflow.analysis import synthetic
    from benchflow.analysis.report import build_report

    c = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    sweep = synthetic.start_sweep(c, "synth", "synth")
    seed = 0
    for svc, recall, ttfb in (("vec", 0.95, None), ("llm", None, 40.0)):
        for conc in (1, 4):
            for rep in range(3):
                seed += 1
                t = synthetic.SynthTrial(
                    scenario="synth",
                    experiment="synth",
                    service=svc,
                    config={"concurrency": conc},
                    throughput=100.0 * conc * (2 if svc == "vec" else 1),
                    quality={"recall_at_10": recall - 0.01 * conc} if recall else {},
                    ttfb_median_ms=ttfb,
                    repetition=rep,
                    seed=seed,
                    sweep=sweep,
                    tracking_uri=c.tracking_uri,
                )
                tracking.upload_trial(synthetic.write_trial(tmp_path / "results", t), c)
    out = build_report(
        c, sweep=sweep["sweep_id"], results_dir=tmp_path / "results", out_dir=tmp_path / "reports"
    )
    names = {p.stem for p in out.figures}
    assert {"recall_qps", "ttft_itl", "scaling", "latency_cdf", "latency_throughput"} <= names
    html = out.html.read_text()
    assert "recall_at_10" in html and "TTFB p50 ms" in html
    # side by side: vec and llm ran the same workloads (concurrency 1 and 4), 3 reps each
    assert "llm vs vec" in html and "not enough data" not in html
    assert out.logged_to == sweep["parent_run_id"]


def test_side_by_side_pairs_interleaved_subjects_as_compare_does(tmp_path):
    """Two services run interleaved (a, b, a, b, a, b): the report's side-by-side rows
    are paired, as `benchflow compare` would judge them, and show their minimal
    detectable effect. A +10% throughput identical in every pair is a deterministic
    difference, named as such."""
    from benchflow import tracking
    from benchflow.analysis import synthetic
    from benchflow.analysis.report import build_report

    c = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    sweep = synthetic.start_sweep(c, "synth", "synth")
    seed = 0
    for rep in range(3):
        for svc in ("a", "b"):
            seed += 1
            t = synthetic.SynthTrial(
                scenario="synth",
                experiment="synth",
                service=svc,
                config={"concurrency": 2},
                throughput=100.0 * (1.1 if svc == "b" else 1.0) * (1 + 0.01 * rep),
                repetition=rep,
                seed=seed,
                sweep=sweep,
                tracking_uri=c.tracking_uri,
            )
            tracking.upload_trial(synthetic.write_trial(tmp_path / "results", t), c)
    out = build_report(
        c, sweep=sweep["sweep_id"], results_dir=tmp_path / "results", out_dir=tmp_path / "reports"
    )
    md = out.markdown.read_text()
    table = md[md.index("## Side by side") : md.index("## Figures")]
    rows = [r for r in table.splitlines() if r.startswith("| (one config)")]
    assert len(rows) == 3 and all("| paired (3) |" in r for r in rows), table
    thr = next(r for r in rows if "| throughput |" in r)
    assert "| worse |" in thr and "deterministic difference" in thr
    p50 = next(r for r in rows if "| latency_ms.p50 |" in r)
    assert "±" in p50  # its MDE
    assert "paired" in out.html.read_text()
