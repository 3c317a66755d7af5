"""Structured logs: JSON lines with timestamp, level, trial_id, component and message.

- Every trial writes ``logs/events.jsonl`` (the harness's records) and a readable
  ``logs/trial.log`` (:func:`trial_logging`).
- A server the harness launches (a SUT, MLflow, PostgreSQL) has its stdout and
  stderr read line by line (:class:`OutputCapture`): each line goes, masked, to
  ``NAME.out`` / ``NAME.err`` as it was, and as a JSON line to ``NAME.jsonl``
  with component ``sut.NAME``, the level found in the line (a line that is JSON
  itself is converted: its own level/message/time fields are used), and the
  trial id of the trial running.
- Long-lived commands (``benchflow server run``) log to one JSON-lines file
  (:func:`process_logging`).
- Third-party libraries' INFO records (faiss's "Loading faiss with AVX2
  support", MLflow's "Creating initial MLflow database tables") are dropped from
  the console and the trial's logs unless verbose (:func:`quiet_third_party`).

Secret values (config keys and environment variables named as secrets) and URL
or DSN passwords are masked before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from benchflow.secrets import mask, secret_values

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
EVENTS_FILE = "events.jsonl"
SUT_COMPONENT = "sut."

# The trial running in this process (read by OutputCapture for the lines of its SUTs).
_current: dict[str, object] = {"trial_id": None, "secrets": frozenset()}


def current_trial() -> tuple[str | None, frozenset[str]]:
    """The id and known secret values of the trial running in this process, if any."""
    return _current["trial_id"], _current["secrets"]  # type: ignore[return-value]


class _Mask(logging.Filter):
    def __init__(self, trial_id: str | None, secrets: set[str]) -> None:
        super().__init__()
        self.trial_id, self.secrets = trial_id, secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self.trial_id is not None:
            record.trial_id = self.trial_id
        record.msg = mask(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text, self.secrets)
        return True


def entry(
    timestamp: float,
    level: str,
    trial_id: str | None,
    component: str,
    message: str,
    **extra: object,
) -> dict[str, object]:
    """One structured log record (the schema of every ``*.jsonl`` benchflow writes)."""
    return {
        "timestamp": datetime.fromtimestamp(timestamp, timezone.utc).isoformat(),
        "level": level,
        "trial_id": trial_id,
        "component": component,
        "message": message,
        **extra,
    }


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {}
        if record.exc_text or record.exc_info:
            extra["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(
            entry(
                record.created,
                record.levelname,
                getattr(record, "trial_id", None),
                record.name,
                record.getMessage(),
                **extra,
            )
        )


# -- third-party noise ------------------------------------------------------------------
#: Libraries whose records below WARNING tell a benchmark's user nothing to act on.
NOISY_LOGGERS = (
    "faiss",
    "mlflow",
    "alembic",
    "urllib3",
    "httpx",
    "httpcore",
    "botocore",
    "boto3",
    "s3transfer",
    "matplotlib",
    "PIL",
    "numexpr",
    "filelock",
    "git",
)
#: What ``-v`` / ``hydra.verbose`` asked for, handed down to a trial's worker process:
#: unset or empty (quiet), ``all``, or logger names separated by commas.
VERBOSE_ENV = "BENCHFLOW_VERBOSE"
_MLFLOW_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"
_quieted: dict[str, int] = {}  # logger -> its level before quiet_third_party raised it
_env_set: list[str] = []  # environment variables quiet_third_party set itself


def verbose_loggers(verbose: object) -> set[str] | None:
    """Hydra's ``hydra.verbose`` (true, a logger name, a list of names) as the loggers
    it names: None for all of them, an empty set for none."""
    if verbose is None or verbose is False:
        return set()
    if verbose is True:
        return None
    if isinstance(verbose, str):
        if verbose.strip().lower() in ("", "false", "0", "no", "off"):
            return set()
        if verbose.strip().lower() in ("true", "1", "yes", "on", "all"):
            return None
        names = {n.strip() for n in verbose.split(",") if n.strip()}
    else:
        names = {str(n) for n in verbose}  # type: ignore[attr-defined]
    return None if "__root__" in names else names


def quiet_third_party(verbose: object = None) -> None:
    """Set :data:`NOISY_LOGGERS` to WARNING unless ``verbose`` names them (see
    :func:`verbose_loggers`); a later verbose call restores their levels.

    ``verbose`` given (``python -m benchflow``): also recorded in the environment,
    for the processes a trial starts (``BENCHFLOW_VERBOSE``) and for MLflow, which
    sets its logger's level when first imported (``MLFLOW_LOGGING_LEVEL``, unless
    the user set it). None (a trial's logging, in a worker too): as
    ``BENCHFLOW_VERBOSE`` says, the environment left as it is.
    """
    export = verbose is not None
    loud = verbose_loggers(verbose if export else os.environ.get(VERBOSE_ENV, ""))
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        if loud is None or any(name == n or name.startswith(n + ".") for n in loud):
            if name in _quieted:
                lg.setLevel(_quieted.pop(name))
            continue
        if name == "mlflow" and _MLFLOW_LEVEL_ENV in os.environ and not _env_set:
            continue  # the user chose MLflow's level
        _quieted.setdefault(name, lg.level)
        if lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)
    if not export:
        return
    os.environ[VERBOSE_ENV] = "all" if loud is None else ",".join(sorted(loud))
    if "mlflow" in _quieted and _MLFLOW_LEVEL_ENV not in os.environ:
        os.environ[_MLFLOW_LEVEL_ENV] = "WARNING"
        _env_set.append(_MLFLOW_LEVEL_ENV)
    elif "mlflow" not in _quieted and _env_set:
        os.environ.pop(_MLFLOW_LEVEL_ENV, None)
        _env_set.clear()


@contextmanager
def trial_logging(logs_dir: Path, trial_id: str, config: dict) -> Iterator[None]:
    """Route every log record to the trial's files while the trial runs."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    quiet_third_party()  # in a worker process too
    known = secret_values(config)
    filt = _Mask(trial_id, known)
    handlers = []
    for path, fmt in (
        (logs_dir / EVENTS_FILE, JsonLines()),
        (logs_dir / "trial.log", logging.Formatter(TEXT_FORMAT)),
    ):
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(fmt)
        h.addFilter(filt)
        h.setLevel(logging.INFO)
        handlers.append(h)
    root = logging.getLogger()
    ours = [logging.getLogger(n) for n in ("benchflow", "drivers")]
    old_levels = [lg.level for lg in ours]
    for lg in ours:
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    # Mask on every handler (Hydra's console and job log too) while the trial runs.
    others = list(root.handlers)
    for h in others:
        h.addFilter(filt)
    for h in handlers:
        root.addHandler(h)
    saved = dict(_current)
    _current.update(trial_id=trial_id, secrets=frozenset(known))
    try:
        yield
    finally:
        _current.update(saved)
        for h in handlers:
            root.removeHandler(h)
            h.close()
        for h in others:
            h.removeFilter(filt)
        for lg, level in zip(ours, old_levels, strict=True):
            lg.setLevel(level)


def process_logging(path: Path, level: int = logging.INFO) -> None:
    """Log this whole process as JSON lines to ``path`` (masked) and readably to stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    filt = _Mask(None, secret_values())
    root = logging.getLogger()
    for h, fmt in (
        (logging.FileHandler(path, encoding="utf-8"), JsonLines()),
        (logging.StreamHandler(sys.stderr), logging.Formatter(TEXT_FORMAT)),
    ):
        h.setFormatter(fmt)
        h.addFilter(filt)
        root.addHandler(h)
    root.setLevel(level)


# -- the output of launched servers ------------------------------------------------------
_LEVEL = re.compile(
    r"\b(DEBUG|INFO|NOTICE|LOG|WARN|WARNING|ERROR|CRITICAL|FATAL|PANIC)\b", re.IGNORECASE
)
_LEVEL_NAMES = {
    "debug": "DEBUG",
    "info": "INFO",
    "notice": "INFO",
    "log": "INFO",  # PostgreSQL's LOG
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "fatal": "CRITICAL",
    "panic": "CRITICAL",
}


def sut_entry(
    line: str, stream: str, server: str, trial_id: str | None, now: float
) -> dict[str, object]:
    """A structured record for one (already masked) line of a launched server's output.

    A line that is a JSON object keeps its fields under ``sut`` and lends its
    level and message; otherwise the first level word found in the first 80
    characters is the level (else INFO).
    """
    level, message, fields = "INFO", line, None
    stripped = line.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            fields = obj
            message = str(obj.get("message") or obj.get("msg") or obj.get("event") or stripped)
            raw = str(obj.get("level") or obj.get("levelname") or obj.get("severity") or "")
            level = _LEVEL_NAMES.get(raw.lower(), "INFO")
    if fields is None:
        m = _LEVEL.search(line[:80])
        if m:
            level = _LEVEL_NAMES[m.group(1).lower()]
    extra: dict[str, object] = {"stream": stream}
    if fields is not None:
        extra["sut"] = fields
    return entry(now, level, trial_id, SUT_COMPONENT + server, message, **extra)


class OutputCapture:
    """Reads a launched server's stdout and stderr in two threads (see the module doc).

    ``environ``: the server's environment, whose secret values are masked along
    with the running trial's.
    """

    def __init__(
        self,
        name: str,
        logs_dir: Path,
        stdout: IO[bytes],
        stderr: IO[bytes],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        trial_id, trial_secrets = current_trial()
        self.trial_id = trial_id
        self.secrets = set(trial_secrets) | secret_values(None, environ)
        self.jsonl_path = logs_dir / f"{name}.jsonl"
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - close()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._pump,
                args=(pipe, logs_dir / f"{name}.{ext}", stream),
                name=f"capture-{name}-{stream}",
                daemon=True,
            )
            for pipe, ext, stream in ((stdout, "out", "stdout"), (stderr, "err", "stderr"))
        ]
        for t in self._threads:
            t.start()

    def _pump(self, pipe: IO[bytes], text_path: Path, stream: str) -> None:
        import time

        with open(text_path, "a", encoding="utf-8") as text:
            for raw in iter(pipe.readline, b""):
                line = mask(raw.decode("utf-8", "replace").rstrip("\r\n"), self.secrets)
                text.write(line + "\n")
                text.flush()
                record = sut_entry(line, stream, self.name, self.trial_id, time.time())
                with self._lock:
                    if not self._jsonl.closed:
                        self._jsonl.write(json.dumps(record) + "\n")
                        self._jsonl.flush()
        pipe.close()

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait for both streams to end (the server has exited), then close the files."""
        for t in self._threads:
            t.join(timeout_s)
        with self._lock:
            self._jsonl.close()
