"""The trials a report is about: runs from MLflow (one query), plus each trial's files
(histograms, 1 s series, monitor samples, effective config) read from the results
directory when they are here, else from the run's artifacts."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchflow.load.histogram import LogHistogram
from benchflow.results.identity import NON_IDENTITY, workload_hash

SUBJECT_KEYS = ("service", "target")  # what differs between sides in a side-by-side table


class ReportError(Exception):
    """Nothing to report on; ``str()`` says why."""


@dataclass
class TrialFiles:
    """Lazy access to one trial's files."""

    run_id: str
    local: Path | None
    artifact_uri: str
    _cache: dict = field(default_factory=dict, repr=False)

    def _text(self, name: str) -> str | None:
        if name in self._cache:
            return self._cache[name]
        text = None
        for base in (self.local, _local_artifacts(self.artifact_uri)):
            if base is not None and (base / name).is_file():
                text = (base / name).read_text()
                break
        else:
            try:
                import mlflow.artifacts

                path = mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path=name)
                text = Path(path).read_text()
            except Exception:
                text = None
        self._cache[name] = text
        return text

    def histograms(self) -> dict[str, LogHistogram]:
        """Parsed once; callers must not change them (copy before merging)."""
        if "_hists" not in self._cache:
            text = self._text("histograms.json")
            parsed = json.loads(text) if text else {}
            self._cache["_hists"] = {k: LogHistogram.from_dict(v) for k, v in parsed.items()}
        return self._cache["_hists"]

    def csv(self, name: str) -> pd.DataFrame:
        text = self._text(name)
        if not text:
            return pd.DataFrame()
        rows = list(csv.DictReader(io.StringIO(text)))
        return pd.DataFrame(rows).apply(pd.to_numeric, errors="coerce") if rows else pd.DataFrame()

    def config_yaml(self) -> str:
        return self._text("effective_config.yaml") or "(effective_config.yaml not found)"


def _local_artifacts(uri: str) -> Path | None:
    path = uri.removeprefix("file://")
    return Path(path) if path.startswith("/") else None


@dataclass
class TrialSet:
    """The trials of one sweep or experiment, one row per trial run."""

    title: str
    scenario: str
    experiment_id: str
    parent_run_id: str | None
    runs: pd.DataFrame  # mlflow.search_runs columns + subject, config, workload
    files: dict[str, TrialFiles]
    params: list[str]  # varying param columns (without "params.")

    @property
    def finished(self) -> pd.DataFrame:
        r = self.runs
        return r[(r["status"] == "FINISHED") & (r.get("tags.benchflow.valid") == "true")]


def load(
    client,
    sweep: str | None = None,
    experiment: str | None = None,
    results_dir: str | Path = "results",
) -> TrialSet:
    """Find the runs of a sweep (id or directory) or of an experiment."""
    import mlflow

    results_dir = Path(results_dir)
    parent = None
    mlflow.set_tracking_uri(client.tracking_uri)
    if sweep:
        sweep_id = sweep
        manifest = Path(sweep) / "sweep.json"
        if manifest.is_file():
            sweep_id = json.loads(manifest.read_text())["sweep_id"]
        exps = [e.experiment_id for e in client.search_experiments()]
        flt = f"tags.`benchflow.sweep_id` = '{sweep_id}'"
        df = mlflow.search_runs(exps, filter_string=flt)
        if df.empty:
            raise ReportError(f"sweep {sweep_id!r}: no runs with that benchflow.sweep_id")
        title = f"sweep {sweep_id}"
    elif experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ReportError(f"experiment {experiment!r}: no such experiment")
        df = mlflow.search_runs([exp.experiment_id])
        if df.empty:
            raise ReportError(f"experiment {experiment!r} has no runs")
        title = f"experiment {experiment}"
    else:
        raise ReportError("give a SWEEP (id or directory) or --experiment NAME")
    for col in ("tags.benchflow.role", "tags.benchflow.trial_id", "tags.benchflow.target"):
        if col not in df:
            df[col] = None
    parents = df[df["tags.benchflow.role"] == "sweep"]
    if sweep and len(parents):
        parent = parents["run_id"].iloc[0]
    trials = df[df["tags.benchflow.trial_id"].notna()].copy()
    if trials.empty:
        raise ReportError(f"{title}: no trial runs")
    scenario = str(trials["tags.benchflow.scenario"].mode().iloc[0])
    trials = _annotate(trials)
    files = {
        r.run_id: TrialFiles(
            r.run_id,
            _trial_dir(results_dir, r),
            r.artifact_uri,
        )
        for r in trials[
            ["run_id", "artifact_uri", "tags.benchflow.scenario", "tags.benchflow.trial_id"]
        ]
        .rename(columns={"tags.benchflow.scenario": "scenario", "tags.benchflow.trial_id": "trial"})
        .itertuples()
    }
    varying = _varying(trials)
    return TrialSet(
        title,
        scenario,
        str(trials["experiment_id"].iloc[0]),
        parent,
        trials,
        files,
        varying,
    )


def _trial_dir(results_dir: Path, r) -> Path | None:
    d = results_dir / str(r.scenario) / str(r.trial)
    return d if d.is_dir() else None


def _params_of(row: pd.Series) -> dict[str, str]:
    return {k[7:]: v for k, v in row.items() if k.startswith("params.") and isinstance(v, str)}


def _annotate(df: pd.DataFrame) -> pd.DataFrame:
    """Add subject (target or service), config label and workload key columns."""
    subjects, workloads, keys = [], [], []
    for _, row in df.iterrows():
        params = _params_of(row)
        target = row.get("tags.benchflow.target")
        subjects.append(
            target if isinstance(target, str) and target else params.get("service.name", "?")
        )
        tkeys = [k for k in str(row.get("tags.benchflow.target_keys") or "").split(",") if k]
        workloads.append(workload_hash(params, [*SUBJECT_KEYS, *tkeys]))
        keys.append(workload_hash(params, tkeys))
    df["subject"] = subjects
    df["workload"] = workloads
    df["config_key"] = keys
    df["config"] = ""
    for _subject, idx in df.groupby("subject").groups.items():
        part = df.loc[idx]
        vary = _varying(part)
        df.loc[idx, "config"] = [
            " ".join(f"{k}={part.at[i, 'params.' + k]}" for k in vary) or "(one config)"
            for i in idx
        ]
    return df


def _varying(df: pd.DataFrame) -> list[str]:
    out = []
    for col in sorted(c for c in df.columns if c.startswith("params.")):
        key = col[7:]
        if any(key == p or key.startswith(p + ".") for p in (*NON_IDENTITY, "target")):
            continue
        if df[col].nunique(dropna=False) > 1:
            out.append(key)
    return out
