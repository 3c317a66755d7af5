#!/usr/bin/env python3
"""The MLflow UI as a benchflow user sees it, in headless Chromium: the screenshots of
docs/results.md, and the browser code the UI test (tests/tracking/test_ui.py) shares.

    python scripts/ui_screenshot.py              # a tiny sweep in a temp dir -> docs/img/*.png
    python scripts/ui_screenshot.py --out /tmp   # elsewhere

It runs a small sweep of the ``sleep`` calibration service into a store of its own
(a temporary directory), starts ``mlflow server`` on that store on a free loopback
port, opens the link benchflow prints at the end of a sweep, expands the sweep's
parent run, shows the throughput and latency columns, and captures the page; then
the parent run's page with its description (the sweep's summary table).

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/apt-packages.txt) and
``selenium`` (benchflow's ``dev`` extra). Nothing is downloaded: selenium is given
both binaries and runs offline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS_TABLE_SHOT = "mlflow-runs-table.png"
DESCRIPTION_SHOT = "mlflow-sweep-description.png"
# What the screenshot shows: the columns docs/results.md tells users to add.
COLUMNS = ["throughput", "latency_ms.p50", "latency_ms.p99", "errors.rate"]
# Columns of the runs table that stay empty for benchmarks (hidden to make room).
EMPTY_COLUMNS = ["Dataset", "Source", "Models"]
SWEEP = [
    "scenario=quickstart",
    "service=sleep",
    "concurrency=1,2,4",
    "duration_s=1",
    "warmup_s=0",
]
# Flags without which Chromium hangs or phones home on a closed network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--force-device-scale-factor=1",
]
RUN_NAME_CELL = "[role=gridcell][col-id='attributes.`Run Name`']"


# -- the browser --------------------------------------------------------------------
def chromium_binaries() -> tuple[str | None, str | None]:
    """Chromium and its WebDriver (Debian: ``chromium``, ``chromium-driver``), or the
    executables ``BENCHFLOW_CHROMIUM`` / ``BENCHFLOW_CHROMEDRIVER`` name; None if absent."""
    browser = os.environ.get("BENCHFLOW_CHROMIUM") or "chromium"
    driver = os.environ.get("BENCHFLOW_CHROMEDRIVER") or "chromedriver"
    return shutil.which(browser), shutil.which(driver)


def browser_missing() -> str | None:
    """What is missing to drive Chromium here (None: nothing)."""
    import importlib.util

    browser, driver = chromium_binaries()
    missing = []
    if browser is None:
        missing.append("chromium (Debian package chromium)")
    if driver is None:
        missing.append("chromedriver (Debian package chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install -e '.[dev]')")
    return ", ".join(missing) or None


@contextlib.contextmanager
def chromium(profile_dir: Path | None = None, width: int = 1600, height: int = 900) -> Iterator:
    """A selenium WebDriver on headless Chromium with a new, empty profile (so no
    earlier visit's choices, which MLflow keeps in the browser, count)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_binaries()
    if browser is None or driver is None:
        raise RuntimeError(f"missing: {browser_missing()}")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as tmp:
        profile = Path(profile_dir or tmp)
        profile.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ]:
            options.add_argument(flag)
        d = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        try:
            d.set_page_load_timeout(60)
            yield d
        finally:
            d.quit()


# -- the MLflow UI server -----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store_uri: str, workdir: Path, timeout_s: float = 300) -> Iterator[str]:
    """``mlflow server`` (what ``mlflow ui`` runs) on ``store_uri``, on a free loopback
    port; yields its base URL and stops it. Its log is ``workdir/mlflow-ui.log``."""
    port = free_port()
    log_path = Path(workdir) / "mlflow-ui.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not up after {timeout_s:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.3)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # the server and its uvicorn worker
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- driving the page ---------------------------------------------------------------
def wait(d, condition, timeout_s: float = 60, what: str = "the page"):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(d, timeout_s, poll_frequency=0.25).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(
            f"timed out waiting for {what}; at {d.current_url}, the page reads:\n"
            + page_text(d)[:2000]
        ) from None


def page_text(d) -> str:
    from selenium.webdriver.common.by import By

    try:
        return d.find_element(By.TAG_NAME, "body").text
    except Exception as exc:  # a page between two renders
        return f"({exc})"


def run_names(d) -> list[str]:
    """The run names in the runs table, top to bottom (as rendered)."""
    from selenium.webdriver.common.by import By

    names = []
    for cell in d.find_elements(By.CSS_SELECTOR, RUN_NAME_CELL):
        with contextlib.suppress(Exception):
            names.append(cell.find_element(By.TAG_NAME, "a").text.strip())
    return names


def wait_for_runs_table(d, timeout_s: float = 90) -> None:
    """Until the experiment page shows its runs table with at least one run."""
    wait(
        d,
        lambda d: re.search(r"#/experiments/[^/?]+/runs(\?|$)", d.current_url) and run_names(d),
        timeout_s,
        "the experiment's runs table",
    )


def close_assistant(d) -> None:
    """Close MLflow's assistant side panel (it takes a third of the page), if open."""
    from selenium.webdriver.common.by import By

    for b in d.find_elements(
        By.CSS_SELECTOR, "button[data-component-id='mlflow.assistant.chat_panel.close']"
    ):
        with contextlib.suppress(Exception):
            b.click()


def expand_sweeps(d, timeout_s: float = 30) -> None:
    """Expand every sweep's parent run (the square toggle left of its name) to show its
    trials; a sweep the UI shows expanded already stays so."""
    from selenium.webdriver.common.by import By

    def click_toggles() -> None:
        for cell in d.find_elements(By.CSS_SELECTOR, RUN_NAME_CELL):
            names = [a.text.strip() for a in cell.find_elements(By.TAG_NAME, "a")]
            toggles = cell.find_elements(By.TAG_NAME, "button")
            if names and names[0].startswith("sweep ") and toggles:
                toggles[0].click()

    before = len(run_names(d))
    click_toggles()
    wait(d, lambda d: len(run_names(d)) != before, timeout_s, "the sweep's rows to toggle")
    if len(run_names(d)) < before:  # it was expanded: that click folded it
        click_toggles()
        wait(d, lambda d: len(run_names(d)) >= before, timeout_s, "the sweep's trials")


def expand_description(d) -> None:
    """Unfold a run page's description ("Show more")."""
    from selenium.webdriver.common.by import By

    for more in d.find_elements(By.XPATH, "//*[normalize-space(text())='Show more']"):
        with contextlib.suppress(Exception):
            more.click()
    wait(d, lambda d: "Show more" not in page_text(d), 10, "the whole description")


def toggle_column(d, name: str) -> None:
    """Tick or untick column ``name`` in the runs table's "Columns" menu."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    menu = wait(
        d,
        lambda d: [
            b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Columns"
        ],
        what='the "Columns" button',
    )
    menu[0].click()
    search = wait(
        d,
        lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder='Search columns']"),
        what="the column search box",
    )[0]
    search.send_keys(name)
    node = wait(
        d,
        lambda d: [
            n
            for n in d.find_elements(
                By.CSS_SELECTOR,
                "[data-testid=column-selector-tree] .du-bois-light-tree-node-content-wrapper",
            )
            if n.text.strip() == name
        ],
        what=f"column {name!r} in the Columns menu",
    )
    node[0].click()
    search.send_keys(Keys.ESCAPE)
    wait(
        d,
        lambda d: not d.find_elements(By.CSS_SELECTOR, "input[placeholder='Search columns']"),
        what="the Columns menu to close",
    )


def column_values(d, metric: str) -> list[str]:
    """The cells of metric column ``metric`` (rendered ones), top to bottom."""
    from selenium.webdriver.common.by import By

    cells = d.find_elements(By.CSS_SELECTOR, f"[role=gridcell][col-id='metrics.`{metric}`']")
    return [c.text.strip() for c in cells]


def show_benchmark_columns(d, columns=COLUMNS, hide=EMPTY_COLUMNS) -> None:
    """Hide the columns benchmarks leave empty, show ``columns`` (metrics)."""
    from selenium.webdriver.common.by import By

    for name in hide:
        if d.find_elements(By.CSS_SELECTOR, f"[role=columnheader][col-id='attributes.`{name}`']"):
            toggle_column(d, name)
    for name in columns:
        toggle_column(d, name)
        wait(d, lambda d, n=name: column_values(d, n), what=f"the column {name!r}")


def widen_column(d, col_id: str, by_px: int) -> None:
    """Drag the right edge of column ``col_id`` (e.g. ``attributes.`Run Name```) by ``by_px``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    handles = d.find_elements(
        By.CSS_SELECTOR, f"[role=columnheader][col-id='{col_id}'] .ag-header-cell-resize"
    )
    if handles:
        ActionChains(d).drag_and_drop_by_offset(handles[0], by_px, 0).perform()


# -- the screenshots ------------------------------------------------------------------
def run_sweep(workdir: Path) -> tuple[str, str]:
    """A tiny sweep into a store in ``workdir``; returns the store and the link benchflow
    printed for it (``then open http://...``)."""
    store = f"sqlite:///{workdir}/mlflow.db"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store,
        "BENCHFLOW_DATA_DIR": str(workdir / "data"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchflow", "-m", *SWEEP],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    link = re.search(r"then open (http://\S+)", proc.stdout)
    if proc.returncode != 0 or link is None:
        raise RuntimeError(
            f"the sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return store, link.group(1)


def on_server(link: str, base: str) -> str:
    """``link`` (as benchflow prints it, for ``mlflow ui``'s default port) on ``base``."""
    return base + re.sub(r"^https?://[^/#]+", "", link)


def capture(out_dir: Path, workdir: Path) -> list[Path]:
    from selenium.webdriver.common.by import By

    store, link = run_sweep(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = [out_dir / RUNS_TABLE_SHOT, out_dir / DESCRIPTION_SHOT]
    with mlflow_ui(store, workdir) as base, chromium(workdir / "profile") as d:
        d.get(on_server(link, base))
        wait_for_runs_table(d)
        close_assistant(d)
        expand_sweeps(d)
        show_benchmark_columns(d)
        widen_column(d, "attributes.`Run Name`", 200)  # the trials' names in full
        for name in COLUMNS:  # "latency_ms.p50" and "latency_ms.p99" in full
            widen_column(d, f"metrics.`{name}`", 25)
        time.sleep(1)  # let the grid settle after the last resize
        d.save_screenshot(str(shots[0]))

        sweep = next(
            a.get_attribute("href")
            for a in d.find_elements(By.CSS_SELECTOR, f"{RUN_NAME_CELL} a")
            if a.text.startswith("sweep ")
        )
        d.get(f"{sweep}?workflowType=machine_learning")
        wait(d, lambda d: "Description" in page_text(d), what="the sweep run's page")
        close_assistant(d)
        expand_description(d)
        time.sleep(0.5)
        d.save_screenshot(str(shots[1]))
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(f"missing: {missing}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="benchflow-ui-"))
    try:
        for shot in capture(args.out, workdir):
            print(shot)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
