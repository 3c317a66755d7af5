"""Identity by value, the order of a sweep's trials, and seeds per repetition (issue 19):
real trials through the entry points (the sleep calibration service, in process)."""

from __future__ import annotations

import json

import pytest

# Short in-process trials: the order and the seeds are under test, not the numbers.
QUICK = [
    "service=sleep",
    "service.transport=inprocess",
    "duration_s=0.3",
    "warmup_s=0",
    "monitor.interval_s=0.2",
    "progress=off",
]


def _metas(workdir) -> list[dict]:
    """meta.json of every trial, in the order they started."""
    metas = [workdir.meta(d) for d in workdir.trial_dirs()]
    return sorted(metas, key=lambda m: m["started_at_epoch"])


def _ms(meta: dict) -> str:
    return next(
        o.split("=", 1)[1] for o in meta["overrides"] if o.startswith("service.service_ms=")
    )


# -- identity by value -------------------------------------------------------------
def test_spellings_of_one_value_are_one_configuration(workdir):
    """5, 5.0 and 5e0 give one config hash, one workload hash and identical params;
    a rerun in another spelling resumes them instead of running again."""
    workdir.run(
        "-m", *QUICK, "service.service_ms=5,5.0,5e0", "resume=false", check=True, timeout=300
    )
    runs = workdir.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    assert len(trials) == 3
    assert trials["tags.benchflow.config_hash"].nunique() == 1
    assert trials["tags.benchflow.workload_hash"].nunique() == 1
    assert set(trials["params.service.service_ms"]) == {"5"}
    params = trials[[c for c in trials.columns if c.startswith("params.")]]
    assert len(params.drop_duplicates()) == 1, "identical params"
    assert set(trials["tags.benchflow.identity"]) == {"value"}
    for d in workdir.trial_dirs():
        assert "service_ms: 5\n" in (d / "effective_config.yaml").read_text()

    again = workdir.run("-m", *QUICK, "service.service_ms=5.00", check=True, timeout=300)
    assert "already FINISHED" in again.stdout + again.stderr
    assert len(workdir.trial_dirs()) == 3, "nothing ran again"


def test_a_run_logged_with_the_text_of_its_config_still_matches(workdir):
    """A run from before identity by value: its params hold the override's text
    (service_ms "5.0") and its config hash was computed from that text. A sweep
    asking for service.service_ms=5 resumes it (by its params, read by value), and
    compare's normalization pairs its params with a new run's."""
    from benchflow.config import compose_trials
    from benchflow.config.validate import normalize_params
    from benchflow.results.identity import config_hashes, workload_hash
    from drivers import discovery

    workdir.run(*QUICK, "service.service_ms=5.0", "tracking.upload=false", check=True)
    (tdir,) = workdir.trial_dirs()
    # Make it what older benchflow left: the text of the config, its hash, no marker.
    eff = tdir / "effective_config.yaml"
    eff.write_text(eff.read_text().replace("service_ms: 5\n", "service_ms: 5.0\n"))
    (spec,) = compose_trials([*QUICK, "service.service_ms=5.0"], False)
    version = discovery.info("sleep").version
    by_value, by_text = config_hashes(spec, version)
    meta = workdir.meta(tdir)
    assert meta["config_hash"] == by_value
    for key in ("identity", "seed_effective", "order"):
        meta.pop(key)
    meta["config_hash"] = by_text
    (tdir / "meta.json").write_text(json.dumps(meta))
    workdir.run("sync", check=True)
    runs = workdir.runs()
    old = runs.iloc[0]
    assert old["params.service.service_ms"] == "5.0"
    assert old["tags.benchflow.config_hash"] == by_text
    assert "tags.benchflow.identity" not in runs or runs["tags.benchflow.identity"].isna().all()

    # resume: neither hash of `service.service_ms=5` is the stored one; its params are
    (spec5,) = compose_trials([*QUICK, "service.service_ms=5"], False)
    assert by_text not in config_hashes(spec5, version)
    again = workdir.run("-m", *QUICK, "service.service_ms=5", check=True, timeout=300)
    assert "already FINISHED" in again.stdout + again.stderr, again.stdout[-2000:]
    assert len(workdir.trial_dirs()) == 1, "resumed, not rerun"

    # compare: the old run's params by value pair with a new run's params
    workdir.run(*QUICK, "service.service_ms=5", "resume=false", check=True)
    runs = workdir.runs()
    new = runs[runs["tags.benchflow.identity"] == "value"].iloc[0]
    p_old = {k[7:]: v for k, v in old.items() if k.startswith("params.") and isinstance(v, str)}
    p_new = {k[7:]: v for k, v in new.items() if k.startswith("params.") and isinstance(v, str)}
    assert workload_hash(p_old) != workload_hash(p_new), "as logged, they differ"
    assert normalize_params(p_new) == p_new, "params logged now are already by value"
    assert workload_hash(normalize_params(p_old)) == workload_hash(normalize_params(p_new))
    assert new["tags.benchflow.workload_hash"] == workload_hash(normalize_params(p_old))


def test_normalize_params_reads_text_by_its_type():
    from benchflow.config.validate import normalize_params

    got = normalize_params(
        {
            "service.driver": "sleep",
            "service.service_ms": "5.0",  # a float setting
            "service.transport": "http",  # a literal
            "service.endpoint": "None",  # optional, unset
            "duration_s": "10.0",
            "rate": "350.0",
            "concurrency": "4",
            "retry_on": "['server_not_ready', 'connection_refused']",
            "service.nosuchkey": "2.0",  # untyped: only the integral float is rewritten
            "scenario": "1.0",  # a string setting keeps its text
            "custom.anything": "1.0",
        }
    )
    assert got["service.service_ms"] == "5" and got["duration_s"] == "10"
    assert got["rate"] == "350" and got["concurrency"] == "4"
    assert got["service.transport"] == "http" and got["service.endpoint"] == "None"
    assert got["retry_on"] == "['server_not_ready', 'connection_refused']"
    assert got["service.nosuchkey"] == "2" and got["scenario"] == "1.0"
    assert got["custom.anything"] == "1.0"
    assert normalize_params(got) == got


# -- order of execution -------------------------------------------------------------
def test_a_sweep_interleaves_its_repetitions_with_paired_seeds(workdir):
    """2 configurations x 3 repetitions run as repetition 0 of each, then 1, then 2;
    each trial records its position, its start and its repetition's seed; the
    repetitions of one configuration draw different Poisson schedules, repetition k
    of both the same one."""
    from benchflow.config.schema import repetition_seed
    from benchflow.load.schedule import Schedule

    workdir.run(
        "-m", *QUICK, "service.service_ms=1,2", "repetitions=3", "rate=200", "seed=7",
        check=True,
        timeout=400,
    )  # fmt: skip
    metas = _metas(workdir)
    assert [(_ms(m), m["repetition"]) for m in metas] == [
        ("1", 0), ("2", 0), ("1", 1), ("2", 1), ("1", 2), ("2", 2),
    ]  # fmt: skip
    assert [m["order"] for m in metas] == [{"mode": "interleaved", "position": i} for i in range(6)]
    assert all("repetition_index" not in " ".join(m["overrides"]) for m in metas)
    sweep_dir = next((workdir.results / "adhoc" / "_sweeps").iterdir())
    planned = json.loads((sweep_dir / "order.json").read_text())
    assert planned["order"] == "interleaved" and len(planned["trials"]) == 6

    # seeds: the config's seed is unchanged; repetition k's is derived from (seed, k)
    assert {m["seed"] for m in metas} == {7}
    seeds = {(_ms(m), m["repetition"]): m["seed_effective"] for m in metas}
    assert seeds[("1", 0)] == 7 == repetition_seed(7, 0)
    for k in range(3):
        assert seeds[("1", k)] == seeds[("2", k)] == repetition_seed(7, k)
    assert len({seeds[("1", k)] for k in range(3)}) == 3
    assert len({m["config_hash"] for m in metas}) == 2, "the seed does not enter the hash"

    def schedule(seed: int):  # the measured phase's (stream 2): 200/s for 0.3 s
        return Schedule(200, "poisson", seed, duration_s=0.3, stream=2).offsets()

    for k in range(3):
        assert (schedule(seeds[("1", k)]) == schedule(seeds[("2", k)])).all()
    assert not (schedule(seeds[("1", 0)]) == schedule(seeds[("1", 1)])).all()

    runs = workdir.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    by_trial = trials.set_index("tags.benchflow.trial_id")
    for m in metas:
        row = by_trial.loc[m["trial_id"]]
        assert row["tags.benchflow.order"] == "interleaved"
        assert int(row["tags.benchflow.order_position"]) == m["order"]["position"]
        assert int(row["tags.benchflow.seed_effective"]) == m["seed_effective"]
        assert float(row["tags.benchflow.started_at"]) == pytest.approx(m["started_at_epoch"])
        assert row["params.order"] == "interleaved"
        assert row["params.repetition_index"] == str(m["repetition"])


def test_the_trial_runs_with_its_repetitions_seed(tmp_path, monkeypatch):
    """The derived seed is what the load engine's phases and the driver get."""
    from benchflow.config import compose_trials
    from benchflow.config.schema import repetition_seed
    from benchflow.run import trial

    seen = []

    class Spy(trial.Engine):
        def run(self, phases, *a, **kw):
            seen.append(([p.seed for p in phases], self.driver.trial.run.seed))
            return super().run(phases, *a, **kw)

    monkeypatch.setattr(trial, "Engine", Spy)
    (spec,) = compose_trials(
        [
            "service=noop",
            "rate=100",
            "duration_s=0.2",
            "warmup_s=0.1",
            "repetitions=3",
            "seed=3",
            "tracking.upload=false",
            "progress=off",
            f"results_dir={tmp_path}",
            f"data_dir={tmp_path / 'data'}",
        ],
        False,
    )
    for k in (0, 2):
        assert trial.run_trial(spec, k).status == "finished"
    s0, s2 = repetition_seed(3, 0), repetition_seed(3, 2)
    assert seen == [([s0, s0], s0), ([s2, s2], s2)]


def test_random_order_is_drawn_from_the_seed_and_blocked_is_the_old_order(workdir):
    def planned(*extra: str) -> list[list[int]]:
        proc = workdir.run("plan", "--json", *QUICK, "service.service_ms=1,2", *extra)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        assert got["trials"] == 6 and got["configurations"] == 2
        return got["trial_order"], [j["overrides"] for j in got["jobs"]]

    first, jobs = planned("repetitions=3", "order=random", "seed=11")
    assert planned("repetitions=3", "order=random", "seed=11")[0] == first, "reproducible"
    assert len(first) == 6 and len(jobs) == 6
    others = {str(planned("repetitions=3", "order=random", f"seed={s}")[0]) for s in (1, 2, 3)}
    assert len(others | {str(first)}) > 1, "another seed, another order"
    order_of_random = [
        (next(o for o in job if o.startswith("service.service_ms=")), job[-1]) for job in jobs
    ]

    workdir.run(
        "-m", *QUICK, "service.service_ms=1,2", "repetitions=3", "order=random", "seed=11",
        check=True,
        timeout=400,
    )  # fmt: skip
    ran = [
        (f"service.service_ms={_ms(m)}", f"repetition_index={m['repetition']}")
        for m in _metas(workdir)
    ]
    assert ran == order_of_random, "the sweep ran in the planned random order"
    assert [m["order"]["position"] for m in _metas(workdir)] == list(range(6))

    blocked, jobs = planned("repetitions=3", "order=blocked")
    assert blocked == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]] and len(jobs) == 2
    workdir.run(
        "-m", *QUICK, "service.service_ms=3,4", "repetitions=2", "order=blocked",
        check=True,
        timeout=400,
    )  # fmt: skip
    metas = [m for m in _metas(workdir) if m["order"]["mode"] == "blocked"]
    assert [(_ms(m), m["repetition"]) for m in metas] == [("3", 0), ("3", 1), ("4", 0), ("4", 1)]
    assert [m["order"]["position"] for m in metas] == [0, 1, 2, 3]
    assert {m["sweep"]["job_num"] for m in metas} == {0, 1}, "one job per configuration"


def test_plan_says_the_order(workdir):
    proc = workdir.run("plan", *QUICK, "service.service_ms=1,2", "repetitions=3", check=True)
    assert "order: interleaved" in proc.stdout
    assert "2 configuration(s), 6 job(s), 6 trial(s)" in proc.stdout
    proc = workdir.run("plan", *QUICK, "service.service_ms=1,2", "order=blocked", check=True)
    assert "order: blocked" in proc.stdout and "2 job(s), 2 trial(s)" in proc.stdout


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["order=sideways"], ["order", "'sideways'", "allowed: interleaved, random, blocked"]),
        (["-m", "order=random,blocked"], ["order", "one order for the whole sweep"]),
        (["repetitions=2", "repetition_index=2"], ["repetition_index", "0..1"]),
    ],
)
def test_a_bad_order_exits_2(workdir, overrides, words):
    flags = [o for o in overrides if o == "-m"]  # Hydra's flags before the overrides
    proc = workdir.run(*flags, *QUICK, *[o for o in overrides if o != "-m"])
    assert proc.returncode == 2, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in msg, msg
    assert not workdir.results.exists()


# -- --cfg job with a target ---------------------------------------------------------
TARGET = """description: in-process sleep of 7 ms
service: sleep
config:
  service:
    service_ms: 7
    transport: inprocess
"""


def test_cfg_job_shows_the_targets_settings(workdir):
    (workdir.path / "sleep7.yaml").write_text(TARGET)
    workdir.run("targets", "register", "sleepy", "--from", "sleep7.yaml", check=True)
    cfg = workdir.run("--cfg", "job", "target=sleepy/1", check=True).stdout
    assert "service_ms: 7" in cfg and "transport: inprocess" in cfg
    assert "driver: sleep" in cfg and "target: sleepy/1" in cfg
    assert "faiss" not in cfg, "the target's service replaces the default one"
    only = workdir.run("--cfg", "job", "target=sleepy/1", "-p", "service", check=True).stdout
    assert only.startswith("# @package service") and "service_ms: 7" in only
    assert "hydra:" in workdir.run("--cfg", "all", "target=sleepy/1", check=True).stdout
    bad = workdir.run("--cfg", "job", "target=sleepy/9")
    assert bad.returncode == 2 and "sleepy has no version 9" in bad.stderr
    plain = workdir.run("--cfg", "job", "service=noop", check=True).stdout
    assert "driver: noop" in plain  # without a target Hydra prints it, as before


def test_prevalidated_specs_are_found_under_the_overrides_hydra_hands_the_sweeper():
    """Hydra gives its sweeper each job without the hydra.* overrides: the spec composed
    before Hydra started is found under that key too, so no job is composed twice (each
    miss costs Hydra's full composition, ~0.5 s: minutes for a large Slurm sweep)."""
    from benchflow.config import PREVALIDATED, compose_trials
    from benchflow.config.compose import task_overrides

    job = ["service=noop", "seed=3", "hydra.launcher.array_parallelism=2", "++hydra.verbose=false"]
    assert task_overrides(job) == ("service=noop", "seed=3")
    specs = compose_trials(["service=noop", "seed=3,4", "hydra.job.name=x"], multirun=True)
    for seed, spec in zip((3, 4), specs, strict=True):
        assert PREVALIDATED[("service=noop", f"seed={seed}")] is spec
        assert PREVALIDATED[("service=noop", f"seed={seed}", "hydra.job.name=x")] is spec
