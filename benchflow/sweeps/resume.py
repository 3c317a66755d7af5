"""Resume: which repetitions of a configuration already have a FINISHED run in MLflow.

A rerun of a sweep (same overrides, any sweep directory) skips a trial whose
configuration hash and repetition already have a FINISHED run in the sweep's
experiment, so an interrupted sweep completes without repeating work;
``resume=false`` runs everything again. FAILED and KILLED runs never count.
The check is made twice: by the Slurm launcher before submitting (a job whose
repetitions are all done is not submitted) and by each job before each
repetition (what finished while it waited in the queue, or before a requeue).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("benchflow.resume")

TAG_HASH = "benchflow.config_hash"


@dataclass(frozen=True)
class Done:
    """A repetition that already has a FINISHED run."""

    repetition: int
    trial_id: str
    run_id: str


def _experiment_id(c, name: str) -> str | None:
    exp = c.get_experiment_by_name(name)
    return None if exp is None or exp.lifecycle_stage == "deleted" else exp.experiment_id


def has_trials(c, experiment: str) -> bool:
    """Whether the experiment holds any trial run at all (a cheap first check)."""
    exp_id = _experiment_id(c, experiment)
    if exp_id is None:
        return False
    return bool(c.search_runs([exp_id], f"tags.`{TAG_HASH}` IS NOT NULL", max_results=1))


def finished(c, experiment: str, config_hash: str) -> dict[int, Done]:
    """FINISHED repetitions of ``config_hash`` in ``experiment``: repetition -> run."""
    exp_id = _experiment_id(c, experiment)
    if exp_id is None:
        return {}
    runs = c.search_runs(
        [exp_id],
        f"tags.`{TAG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED'",
        max_results=1000,
    )
    out: dict[int, Done] = {}
    for r in runs:
        tags = r.data.tags
        if tags.get("benchflow.upload") != "complete" or "benchflow.repetition" not in tags:
            continue  # an upload cut short is completed by sync, not trusted here
        rep = int(tags["benchflow.repetition"])
        out.setdefault(rep, Done(rep, tags.get("benchflow.trial_id", ""), r.info.run_id))
    return out


def list_resumed(job_dir: Path, done: list[Done], results_dir: str, scenario: str) -> int:
    """Add the trial directories of resumed repetitions to a job's ``trials.txt``.

    So the sweep's summary shows them; a directory not on this filesystem (the
    trial ran elsewhere) is left out of the table but still skipped.
    """
    from benchflow.sweeps.manifest import TRIALS_FILE

    listing = job_dir / TRIALS_FILE
    listed = set(listing.read_text().split()) if listing.exists() else set()
    n = 0
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(listing, "a") as f:
        for d in done:
            tdir = Path(results_dir) / scenario / d.trial_id
            if (tdir / "meta.json").exists() and str(tdir) not in listed:
                f.write(f"{tdir}\n")
                n += 1
    return n
