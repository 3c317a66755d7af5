"""Logins on the tracking server (`benchflow server start --auth`, MLflow's basic-auth
app), with real users from the environment: an administrator, users who edit
their own experiments, and read-only viewers."""

from __future__ import annotations

import json
import secrets

import pytest
from conftest import FAST
from fixtures.tracking_server import start_tracking_server
from mlflow.exceptions import MlflowException

from .conftest import SERVER

PASSWORDS = {
    name: f"{name}-{secrets.token_urlsafe(12)}" for name in ("admin", "alice", "bob", "vic")
}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, postgres_server):
    env = {
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORDS["admin"],
        "BENCHFLOW_AUTH_USERS": "alice:user bob:user vic:viewer",
        **{f"BENCHFLOW_AUTH_PASSWORD_{n.upper()}": PASSWORDS[n] for n in ("alice", "bob", "vic")},
    }
    root = tmp_path_factory.mktemp("auth")
    server = start_tracking_server(
        root,
        postgres_server,
        "mlflow_auth_tests",
        extra_args=["--auth"],
        extra_env=env,
        artifacts=str(root / "artifacts"),
    )
    yield server
    server.cli("stop", "--dir", str(server.dir), check=False)


class Login:
    """An MlflowClient acting as one user (MLflow reads credentials from the environment)."""

    def __init__(self, url: str, user: str, password: str, monkeypatch) -> None:
        self.url, self.user, self.password, self.mp = url, user, password, monkeypatch

    def __call__(self, fn, *args, **kwargs):
        from mlflow import MlflowClient

        with self.mp.context() as m:
            m.setenv("MLFLOW_TRACKING_USERNAME", self.user)
            m.setenv("MLFLOW_TRACKING_PASSWORD", self.password)
            m.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            return fn(MlflowClient(self.url), *args, **kwargs)


def _denied(login: Login, fn) -> str:
    with pytest.raises(MlflowException) as info:
        login(fn)
    return str(info.value)


def test_roles_from_the_environment(auth_server, workdir, monkeypatch):
    as_ = {n: Login(auth_server.url, n, PASSWORDS[n], monkeypatch) for n in PASSWORDS}
    status = json.loads(auth_server.cli("status", "--dir", str(auth_server.dir), "--json").stdout)
    assert status["users"] == {"admin": "admin", "alice": "user", "bob": "user", "vic": "viewer"}

    # alice, a user, runs a real trial that logs to her own experiment
    workdir.env.update(
        MLFLOW_TRACKING_URI=auth_server.url,
        MLFLOW_TRACKING_USERNAME="alice",
        MLFLOW_TRACKING_PASSWORD=PASSWORDS["alice"],
    )
    workdir.run("service=noop", "scenario=alice-exp", *SERVER, *FAST, check=True)
    (tdir,) = workdir.trial_dirs("alice-exp")
    run_id = json.loads((tdir / "upload.json").read_text())["run_id"]
    exp_id = as_["alice"](lambda c: c.get_experiment_by_name("alice-exp").experiment_id)
    as_["alice"](lambda c: c.set_tag(run_id, "note", "mine"))  # she edits her own

    # bob, another user, reads alice's run but cannot change her experiment
    assert as_["bob"](lambda c: c.get_run(run_id).data.tags["note"]) == "mine"
    assert "403" in _denied(as_["bob"], lambda c: c.set_tag(run_id, "note", "bob was here"))
    assert "403" in _denied(as_["bob"], lambda c: c.create_run(exp_id))
    assert "403" in _denied(as_["bob"], lambda c: c.log_metric(run_id, "throughput", 1.0))
    bob_exp = as_["bob"](lambda c: c.create_experiment("bob-exp"))  # but his own, yes
    as_["bob"](lambda c: c.create_run(bob_exp))

    # vic, a viewer, reads everything and writes nothing
    runs = as_["vic"](lambda c: c.search_runs([exp_id]))
    assert [r.info.run_id for r in runs] == [run_id]
    assert "403" in _denied(as_["vic"], lambda c: c.set_tag(run_id, "note", "vic"))
    assert "403" in _denied(as_["vic"], lambda c: c.create_experiment("vic-exp"))
    assert "403" in _denied(as_["vic"], lambda c: c.create_run(bob_exp))

    # the administrator may do anything; a wrong password nothing
    as_["admin"](lambda c: c.set_tag(run_id, "reviewed", "yes"))
    wrong = Login(auth_server.url, "alice", "not-her-password", monkeypatch)
    assert "401" in _denied(wrong, lambda c: c.search_experiments())
    anonymous = Login(auth_server.url, "", "", monkeypatch)
    assert "401" in _denied(anonymous, lambda c: c.search_experiments())


def test_a_viewers_trial_keeps_its_files_for_sync(auth_server, workdir, monkeypatch):
    """Permission denied is like an outage: the result stays on disk; sync by a user
    who may write uploads it."""
    workdir.env.update(
        MLFLOW_TRACKING_URI=auth_server.url,
        MLFLOW_TRACKING_USERNAME="vic",
        MLFLOW_TRACKING_PASSWORD=PASSWORDS["vic"],
    )
    proc = workdir.run("service=noop", "scenario=vic-try", *SERVER, *FAST, check=True)
    assert "run `benchflow sync`" in proc.stdout + proc.stderr
    (tdir,) = workdir.trial_dirs("vic-try")
    assert workdir.meta(tdir)["status"] == "finished" and not (tdir / "upload.json").exists()
    workdir.env.update(
        MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=PASSWORDS["alice"]
    )
    sync = workdir.run("sync", check=True)
    assert "uploaded 1," in sync.stdout
    # credentials never reach the trial's files
    for f in tdir.rglob("*"):
        if f.is_file():
            text = f.read_text(errors="ignore")
            assert PASSWORDS["vic"] not in text and PASSWORDS["alice"] not in text, f
