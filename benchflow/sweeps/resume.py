"""Resume: which repetitions of a configuration already have a FINISHED run in MLflow.

A rerun of a sweep (same overrides, any sweep directory) skips a trial whose
configuration hash and repetition already have a FINISHED run in the sweep's
experiment, so an interrupted sweep completes without repeating work;
``resume=false`` runs everything again. FAILED and KILLED runs never count.
The check is made twice: by the Slurm launcher before submitting (a job whose
repetitions are all done is not submitted) and by each job before each
repetition (what finished while it waited in the queue, or before a requeue).

Identity is by value (:func:`finished_for`): a run matches when its config hash
is this configuration's (``service.service_ms=5``, ``5.0`` and ``5e0`` are one),
or is the hash older benchflow recorded for the same command line (computed from
its text), or — for runs logged before identity by value — when its params, read
back by value (``benchflow.config.validate.normalize_params``), are this
configuration's.
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


def finished_for(c, spec) -> dict[int, Done]:
    """FINISHED repetitions of ``spec``'s configuration in its experiment, matched by
    value (see the module's docstring): repetition -> run."""
    from benchflow.results.identity import config_hashes
    from drivers import discovery

    experiment = spec.cfg.tracking.experiment
    info = discovery.info(spec.service.driver)
    out: dict[int, Done] = {}
    for h in config_hashes(spec, info.version):
        for rep, done in finished(c, experiment, h).items():
            out.setdefault(rep, done)
    if all(rep in out for rep in spec.repetitions_run):
        return out
    try:
        older = _by_params(c, experiment, spec, f"{info.package}=={info.version}")
    except Exception as exc:  # a store that cannot search so: the hashes decided
        log.debug("resume: matching older runs by params failed: %s", exc)
        older = {}
    for rep, done in older.items():
        out.setdefault(rep, done)
    return out


# Runs logged before identity by value, per (store, experiment, driver package): their
# params by value, read once per process (such runs are no longer written).
_OLDER: dict[tuple[str, str, str], list[tuple[str, Done]]] = {}


def _by_params(c, experiment: str, spec, driver_package: str) -> dict[int, Done]:
    from benchflow.config.validate import normalize_params
    from benchflow.results.identity import params_hash
    from benchflow.secrets import redact_tree
    from benchflow.tracking.upload import params_of

    exp_id = _experiment_id(c, experiment)
    if exp_id is None:
        return {}
    key = (str(getattr(c, "tracking_uri", "")), exp_id, driver_package)
    if key not in _OLDER:
        flt = (
            f"tags.`benchflow.driver_package` = '{driver_package}' and "
            "tags.`benchflow.identity` IS NULL and attributes.status = 'FINISHED'"
        )
        runs, token = [], None
        while True:
            page = c.search_runs([exp_id], flt, max_results=5000, page_token=token)
            runs += list(page)
            token = getattr(page, "token", None)
            if not token:
                break
        found = []
        for r in runs:
            tags = r.data.tags
            if tags.get("benchflow.upload") != "complete" or "benchflow.repetition" not in tags:
                continue
            rep = int(tags["benchflow.repetition"])
            ident = params_hash(normalize_params(r.data.params), driver_package)
            found.append((ident, Done(rep, tags.get("benchflow.trial_id", ""), r.info.run_id)))
        _OLDER[key] = found
    mine = params_hash(normalize_params(params_of(redact_tree(spec.resolved))), driver_package)
    out: dict[int, Done] = {}
    for ident, done in _OLDER[key]:
        if ident == mine:
            out.setdefault(done.repetition, done)
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
