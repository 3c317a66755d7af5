"""Keeping secrets out of everything benchflow writes or logs.

A config key is secret when a word of its own name (split on ``_``, ``-`` and
camelCase) is one of :data:`SECRET_WORDS`, or its last word is ``key`` or
``token`` (singular: ``max_tokens`` is a setting, ``api_token`` a secret).
Environment variables are secret by the same words in upper case. Secret values
are removed from MLflow params and replaced by :data:`REDACTED` in files; any
string equal to a known secret value, and the password part of URLs and DSNs,
are masked wherever benchflow writes text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "secrets",
        "apikey",
        "credential",
        "credentials",
        "passphrase",
        "authorization",
    }
)
SECRET_LAST_WORDS = frozenset({"key", "token"})
_ENV_SECRET = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE_KEY|_KEY$|^KEY$"
)
# user:password@ in URLs, password=... in libpq DSNs
# (Hydra escapes ':' in the overrides it logs and saves: http\://user\:pw@host)
_URL_PASSWORD = re.compile(r"(:\\?//)([^:/@\s\\]+)(\\?):([^@\s]+)@")
_DSN_PASSWORD = re.compile(r"\b(password|passwd|pwd)\s*=\s*('[^']*'|\S+)", re.IGNORECASE)
REDACTED = "***REDACTED***"
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_key(name: str) -> bool:
    """True when a key's own name (not its parents') says it holds a secret."""
    words = [w.lower() for w in _WORD.findall(str(name).rsplit(".", 1)[-1])]
    return bool(words) and (any(w in SECRET_WORDS for w in words) or words[-1] in SECRET_LAST_WORDS)


def is_secret_env(name: str) -> bool:
    return bool(_ENV_SECRET.search(name.upper()))


def redact_tree(tree: Any) -> Any:
    """A copy of a nested dict/list with secret-named values replaced by REDACTED and
    passwords inside URLs and DSNs masked."""
    if isinstance(tree, Mapping):
        return {
            k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact_tree(v))
            for k, v in tree.items()
        }
    if isinstance(tree, list | tuple):
        return [redact_tree(v) for v in tree]
    if isinstance(tree, str):
        return mask(tree, set())
    return tree


def secret_values(tree: Any = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret value in a config tree (≥ 4 characters) and the environment (≥ 8)."""
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v, key)
        elif key and is_secret_key(key) and node is not None and len(str(node)) >= 4:
            found.add(str(node))

    if tree is not None:
        walk(tree)
    for k, v in (os.environ if environ is None else environ).items():
        if is_secret_env(k) and len(v) >= 8:
            found.add(v)
    return found


def mask(text: str, secrets: set[str]) -> str:
    """``text`` with known secret values and URL/DSN passwords replaced by REDACTED."""
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}{m[2]}{m[3]}:{REDACTED}@", text)
    return _DSN_PASSWORD.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


def mask_overrides_line(text: str) -> str:
    """A line of space-separated Hydra overrides (as launchers log them), each masked."""
    return " ".join(mask_override(o) for o in text.split(" "))


def mask_override(override: str) -> str:
    """A Hydra override (``key=value``) safe to log: secret keys' values redacted."""
    key, sep, _value = override.partition("=")
    if sep and is_secret_key(key.lstrip("+~")):
        return f"{key}={REDACTED}"
    return mask(override, set())
