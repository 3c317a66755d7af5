"""Logins for the tracking server: MLflow's basic-auth app, users from the environment.

Roles are what MLflow's permission model gives (``--app-name basic-auth`` with
workspaces on, so that creating an experiment is a grant of its own):

- ``admin``: an MLflow administrator (manages users and every experiment);
- ``user``: a member of the ``default`` workspace (a role with ``USE`` on it): may
  create experiments and then manages the ones it created; reads all the others
  (``default_permission = READ``) but cannot change them;
- ``viewer``: no role: reads every experiment (the default workspace grants
  ``READ``), creates and changes nothing.

Environment (read by ``benchflow server start --auth``)::

    MLFLOW_AUTH_ADMIN_USERNAME=admin          # MLflow's own variables; the admin is
    MLFLOW_AUTH_ADMIN_PASSWORD=...            #   created on the first start
    BENCHFLOW_AUTH_USERS="alice:user bob:user carol:viewer"
    BENCHFLOW_AUTH_PASSWORD_ALICE=...         # one per user (name upper-cased,
    BENCHFLOW_AUTH_PASSWORD_BOB=...           #   other characters as _)

Users are created on each start, or their password and role brought in line
with the environment when they exist. Clients log in with
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

USERS_ENV = "BENCHFLOW_AUTH_USERS"
PASSWORD_ENV_PREFIX = "BENCHFLOW_AUTH_PASSWORD_"
ADMIN_USER_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
ROLES = ("admin", "user", "viewer")
MEMBERS_ROLE = "benchflow-members"  # the MLflow role that lets a user create experiments
WORKSPACE = "default"
MIN_PASSWORD = 12  # MLflow refuses shorter passwords
SERVER_ARGS = ["--app-name", "basic-auth", "--enable-workspaces"]
_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


class AuthConfigError(ValueError):
    """The environment does not describe the users correctly."""


def password_env(name: str) -> str:
    """The variable holding ``name``'s password: ``BENCHFLOW_AUTH_PASSWORD_<NAME>``."""
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def users_from_env(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """``{name: (role, password)}`` from ``BENCHFLOW_AUTH_USERS`` and the password variables."""
    env = os.environ if environ is None else environ
    out: dict[str, tuple[str, str]] = {}
    for item in re.split(r"[\s,]+", env.get(USERS_ENV, "").strip()):
        if not item:
            continue
        name, _, role = item.partition(":")
        role = role or "user"
        if not _NAME.match(name):
            raise AuthConfigError(f"{USERS_ENV}: user name {name!r}: letters, digits, _ . @ -")
        if role not in ROLES:
            raise AuthConfigError(f"{USERS_ENV}: {name}:{role}: the role must be one of {ROLES}")
        pw = env.get(password_env(name), "")
        if len(pw) < MIN_PASSWORD:
            raise AuthConfigError(
                f"{password_env(name)} must hold {name}'s password "
                f"(at least {MIN_PASSWORD} characters)"
            )
        out[name] = (role, pw)
    return out


def admin_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    env = os.environ if environ is None else environ
    name = env.get(ADMIN_USER_ENV) or "admin"
    pw = env.get(ADMIN_PASSWORD_ENV, "")
    if len(pw) < MIN_PASSWORD:
        raise AuthConfigError(
            f"--auth needs {ADMIN_PASSWORD_ENV} (the administrator's password, "
            f"at least {MIN_PASSWORD} characters)"
        )
    return name, pw


def server_env(state_dir: Path, database_uri: str) -> dict[str, str]:
    """The auth app's config file (no password in it) and environment for ``mlflow server``.

    The users live in the tracking database itself (MLflow keeps their own
    migration table apart), reached with the same ``PGPASSWORD``.
    """
    admin, _ = admin_from_env()
    users_from_env()  # refuse a bad user list before anything starts
    ini = Path(state_dir) / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {os.environ.get('BENCHFLOW_AUTH_DB_URI') or database_uri}\n"
        f"admin_username = {admin}\n"
        "grant_default_workspace_access = true\n"
    )
    ini.chmod(0o600)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        # CSRF tokens must verify across workers and restarts of one run.
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
    return env


@contextlib.contextmanager
def _login(user: str, password: str) -> Iterator[None]:
    """MLflow's REST clients read credentials from the environment only."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, (user, password), strict=True)))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def provision(url: str) -> dict[str, str]:
    """Create or update the users of the environment on the server at ``url``;
    returns ``{name: role}`` (the administrator included)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    admin, admin_pw = admin_from_env()
    users = users_from_env()
    with _login(admin, admin_pw):
        client = AuthServiceClient(url)
        members = _members_role(client)
        for name, (role, pw) in users.items():
            try:
                client.get_user(name)
                client.update_user_password(name, pw)
            except MlflowException:
                client.create_user(name, pw)
            client.update_user_admin(name, role == "admin")
            assigned = any(r.id == members for r in client.list_user_roles(name))
            if role == "user" and not assigned:
                client.assign_role(name, members)
            elif role != "user" and assigned:
                client.unassign_role(name, members)
    return {admin: "admin", **{n: r for n, (r, _) in users.items()}}


def _members_role(client) -> int:
    for role in client.list_roles(WORKSPACE):
        if role.name == MEMBERS_ROLE:
            return role.id
    role = client.create_role(
        WORKSPACE, MEMBERS_ROLE, "benchflow users: create experiments, manage their own"
    )
    client.add_role_permission(role.id, "workspace", "*", "USE")
    return role.id
