"""Probes: each point a search measures is a real trial, like any other.

A probe's spec is the search's own config with the probe's load set — ``rate=``
(open loop, ``concurrency=search.max_inflight`` in flight at most, the search's
arrival) or ``concurrency=`` (closed loop) — and ``seed=`` moved on for each
repeat, validated as any trial is (:func:`benchflow.config.validate`); its
``search`` block is reset to ``search=none``, so a probe has the config hash of
the same trial run by hand, and a rerun finds it.

Where a probe runs:

- here, in this process (:func:`benchflow.sweeps.jobs.run_with_retries`), as a
  child run of the search's parent (its :class:`SweepInfo`);
- on Slurm (``hydra/launcher=slurm``, ``site=...``), as a one-job multirun of
  ``python -m benchflow -m ...`` through benchflow's Slurm launcher, one after
  another (the next probe depends on this one's answer). The sweep callback
  adopts the run tagged with the sweep's id as its parent, so for the probe's
  time the search's parent carries the probe's sweep id (``<search id>-<n>``),
  and the trial links to it; afterwards the parent gets its own id back (and
  status RUNNING: the probe's sweep finished it) and the trial's run is tagged
  with the search's id, as a local probe's is.

Resume: before running, a FINISHED run with the probe's config hash in the
experiment is looked for (``resume=true``, the default); found, its files are
read back (from the results directory, else from MLflow) and no trial runs.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig, OmegaConf, open_dict

from benchflow.config import TrialSpec, conf_dir, validate
from benchflow.load.histogram import LogHistogram
from benchflow.results import read_json
from benchflow.run.trial import SweepInfo, trial_config_hash
from benchflow.search.slo import TrialData
from benchflow.sweeps.manifest import TRIALS_FILE

log = logging.getLogger("benchflow.search")

Over = Literal["rate", "concurrency"]
# the keys a probe sets: any base override of them is replaced
_PROBE_KEYS = ("rate", "concurrency", "seed", "arrival", "clients")


def nice(x: float, over: Over) -> float:
    """A probe's load as it is written in its override: 4 significant digits, or an int."""
    if over == "concurrency":
        return float(max(1, round(x)))
    return float(f"{x:.4g}")


@dataclass(frozen=True)
class Load:
    """One point on a load axis: an open-loop rate or a closed-loop concurrency."""

    over: Over
    x: float

    @property
    def label(self) -> str:
        return f"rate={self.x:g}" if self.over == "rate" else f"concurrency={int(self.x)}"


@dataclass
class ProbeTrial:
    """One trial of a probe (a probe near an SLO may have several, one per seed)."""

    load: Load
    repeat: int
    seed: int
    status: str  # finished | failed
    trial_id: str | None = None
    trial_dir: Path | None = None
    run_id: str | None = None
    reused: bool = False
    error: str | None = None
    data: TrialData | None = None
    load_s: float = 0.0  # warm-up + measured seconds: what the probe cost in load
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "trial_id": self.trial_id,
            "run_id": self.run_id,
            "seed": self.seed,
            "status": self.status,
            "reused": self.reused,
            "error": self.error,
            "load_s": self.load_s,
        }


def read_trial(trial_dir: Path) -> TrialData:
    """metrics.json and histograms.json of a finished trial."""
    metrics = read_json(trial_dir / "metrics.json")
    path = trial_dir / "histograms.json"
    hists = {}
    if path.exists():
        hists = {k: LogHistogram.from_dict(v) for k, v in read_json(path).items()}
    return TrialData(metrics, hists)


def load_seconds(metrics: dict) -> float:
    ld = metrics.get("load") or {}
    return float(ld.get("warmup_s") or 0) + float(ld.get("elapsed_s") or 0)


def _none_search() -> dict:
    return OmegaConf.to_container(OmegaConf.load(conf_dir() / "search" / "none.yaml"))


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


@dataclass
class Prober:
    """Runs the probes of one search (locally or on Slurm), counting its trials."""

    cfg: DictConfig  # the search's composed config (its Hydra job's)
    spec: TrialSpec  # the same, validated
    task_overrides: list[str]
    search_id: str
    search_dir: Path
    parent_run_id: str | None
    tracking_uri: str | None
    started_at: float
    slurm_overrides: list[str] | None = None  # set: probes run as Slurm jobs
    config_dir: str | None = None  # the search's --config-dir, passed on to its Slurm probes
    trials: list[ProbeTrial] = field(default_factory=list)

    # -- counting --------------------------------------------------------------------
    @property
    def spent(self) -> int:
        """Trials of this search so far (reused ones count: a rerun takes the same path)."""
        return len(self.trials)

    @property
    def new(self) -> int:
        return sum(not t.reused for t in self.trials)

    # -- specs -----------------------------------------------------------------------
    def overrides_for(self, load: Load, seed: int) -> list[str]:
        c, s = self.spec.cfg, self.spec.cfg.search
        base = [
            o
            for o in self.task_overrides
            if _key(o) not in _PROBE_KEYS
            and _key(o) != "search"
            and not _key(o).startswith("search.")
        ]
        if load.over == "rate":
            probe = [
                f"rate={load.x:g}",
                f"concurrency={max(c.concurrency, s.max_inflight)}",
                f"arrival={s.arrival or c.arrival}",
            ]
        else:
            probe = [f"concurrency={int(load.x)}"]
            if c.clients > load.x:  # clients split the concurrency: never more than it
                probe.append(f"clients={int(load.x)}")
        if seed != c.seed:
            probe.append(f"seed={seed}")
        return [*base, *probe]

    def spec_for(self, load: Load, seed: int) -> TrialSpec:
        c = self.spec.cfg
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.search = _none_search()
            if load.over == "rate":
                cfg.rate = load.x
                cfg.concurrency = max(c.concurrency, c.search.max_inflight)
                cfg.arrival = c.search.arrival or c.arrival
            else:
                cfg.rate = None
                cfg.concurrency = int(load.x)
                cfg.clients = min(c.clients, int(load.x))
            cfg.seed = seed
        return validate(cfg, tuple(self.overrides_for(load, seed)))

    # -- running ---------------------------------------------------------------------
    def run(self, load: Load, repeat: int) -> ProbeTrial:
        """Run (or reuse) repeat ``repeat`` of the probe at ``load``."""
        seed = self.spec.cfg.seed + repeat
        spec = self.spec_for(load, seed)
        job_num = self.spent
        t0 = time.perf_counter()
        trial = self._reused(spec, load, repeat, seed, job_num)
        if trial is None:
            if self.slurm_overrides is not None:
                trial = self._run_on_slurm(spec, load, repeat, seed, job_num)
            else:
                trial = self._run_here(spec, load, repeat, seed, job_num)
        trial.wall_s = time.perf_counter() - t0
        self.trials.append(trial)
        return trial

    def _sweep(self, job_num: int) -> SweepInfo:
        return SweepInfo(
            sweep_id=self.search_id,
            sweep_dir=str(self.search_dir),
            parent_run_id=self.parent_run_id,
            tracking_uri=self.tracking_uri,
            job_num=job_num,
            started_at=self.started_at,
        )

    def _job_dir(self, job_num: int) -> Path:
        d = self.search_dir / str(job_num)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _finish(self, trial: ProbeTrial, trial_dir: Path) -> ProbeTrial:
        trial.trial_dir = trial_dir
        trial.trial_id = trial_dir.name
        try:
            meta = read_json(trial_dir / "meta.json")
        except (OSError, ValueError) as exc:
            trial.status, trial.error = "failed", f"unreadable trial: {exc}"
            return trial
        trial.status = meta.get("status", "failed")
        if trial.status == "finished":
            trial.data = read_trial(trial_dir)
            trial.load_s = load_seconds(trial.data.metrics)
        else:
            err = meta.get("error") or {}
            trial.error = f"{err.get('class', 'failed')}: {err.get('message', '')}".strip()
        upload = trial_dir / "upload.json"
        if trial.run_id is None and upload.exists():
            trial.run_id = read_json(upload).get("run_id")
        return trial

    def _run_here(
        self, spec: TrialSpec, load: Load, repeat: int, seed: int, job_num: int
    ) -> ProbeTrial:
        from benchflow.sweeps.jobs import run_with_retries

        job_dir = self._job_dir(job_num)
        outcome = run_with_retries(spec, 0, self._sweep(job_num), job_dir)
        with open(job_dir / TRIALS_FILE, "a") as f:
            f.write(f"{outcome.trial_dir}\n")
        trial = ProbeTrial(load, repeat, seed, outcome.status, run_id=outcome.run_id)
        return self._finish(trial, Path(outcome.trial_dir))

    def _run_on_slurm(
        self, spec: TrialSpec, load: Load, repeat: int, seed: int, job_num: int
    ) -> ProbeTrial:
        """One probe as a one-job Slurm sweep, waited for (see the module's docstring)."""
        probe_id = f"{self.search_id}-{job_num}"
        sweep_dir = self.search_dir / "probes" / probe_id
        args = [
            *self.overrides_for(load, seed),
            "search=none",
            *(self.slurm_overrides or []),
            f"hydra.sweep.dir={sweep_dir}",
        ]
        extra = ["--config-dir", self.config_dir] if self.config_dir else []
        cmd = [sys.executable, "-m", "benchflow", "-m", *extra, *args]
        log.info("probe %s: submitting to Slurm", load.label)
        # The sweep's callback adopts the run tagged with its sweep id as the parent:
        # for this probe, the search's parent carries the probe's id.
        self._parent_tags({"benchflow.sweep_id": probe_id})
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        finally:
            self._parent_tags({"benchflow.sweep_id": self.search_id}, running=True)
        job_dir = self._job_dir(job_num)
        (job_dir / "slurm_probe.log").write_text(proc.stdout + proc.stderr)
        listing = sweep_dir / "0" / TRIALS_FILE
        dirs = listing.read_text().split() if listing.exists() else []
        trial = ProbeTrial(load, repeat, seed, "failed")
        if not dirs:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            trial.error = f"the Slurm probe left no trial (exit {proc.returncode}): " + " | ".join(
                tail
            )
            return trial
        with open(job_dir / TRIALS_FILE, "a") as f:
            f.write(f"{dirs[-1]}\n")
        trial = self._finish(trial, Path(dirs[-1]))
        if trial.run_id and self.parent_run_id:  # found by the search's id, as local probes
            self._client().set_tag(trial.run_id, "benchflow.sweep_id", self.search_id)
        return trial

    def _client(self):
        t = self.spec.cfg.tracking
        from benchflow import tracking

        return tracking.client(t.uri, t.http_timeout_s, t.http_retries)

    def _parent_tags(self, tags: dict[str, str], running: bool = False) -> None:
        if not self.parent_run_id:
            return
        try:
            c = self._client()
            for k, v in tags.items():
                c.set_tag(self.parent_run_id, k, v)
            if running:  # the probe's sweep ended (and finished the parent): not the search
                c.update_run(self.parent_run_id, status="RUNNING")
        except Exception as exc:
            log.warning("could not tag the search's parent run: %s", exc)

    def _reused(
        self, spec: TrialSpec, load: Load, repeat: int, seed: int, job_num: int
    ) -> ProbeTrial | None:
        """The FINISHED run of this probe already in MLflow, read back (None: run it)."""
        c = spec.cfg
        if not (c.resume and c.tracking.upload):
            return None
        from benchflow import tracking
        from benchflow.sweeps import resume

        try:
            client = tracking.client(
                c.tracking.uri, c.tracking.http_timeout_s, c.tracking.http_retries
            )
            done = resume.finished(client, c.tracking.experiment, trial_config_hash(spec)).get(0)
        except Exception as exc:  # MLflow unreachable: run it rather than guess
            log.warning("resume check failed (%s); running probe %s", exc, load.label)
            return None
        if done is None:
            return None
        tdir = Path(c.results_dir) / c.scenario / done.trial_id
        try:
            if not (tdir / "metrics.json").exists():
                tdir = _download(client, done.run_id, done.trial_id)
            data = read_trial(tdir)
        except Exception as exc:
            log.warning(
                "probe %s: run %s unreadable (%s); running it", load.label, done.run_id, exc
            )
            return None
        job_dir = self._job_dir(job_num)
        if (tdir / "meta.json").exists():
            with open(job_dir / TRIALS_FILE, "a") as f:
                f.write(f"{tdir}\n")
        log.info("probe %s (seed %d): reusing FINISHED run %s", load.label, seed, done.run_id)
        return ProbeTrial(
            load,
            repeat,
            seed,
            "finished",
            trial_id=done.trial_id,
            trial_dir=tdir,
            run_id=done.run_id,
            reused=True,
            data=data,
            load_s=load_seconds(data.metrics),
        )


def _download(client, run_id: str, trial_id: str) -> Path:
    """metrics.json and histograms.json of a run, from its artifacts."""
    import mlflow.artifacts

    dest = Path(tempfile.mkdtemp(prefix=f"benchflow-probe-{trial_id[:8]}-"))
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for name in ("metrics.json", "histograms.json"):
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=name,
            dst_path=str(dest),
            tracking_uri=client.tracking_uri,
        )
    return dest
