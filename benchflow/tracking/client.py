"""The MLflow client benchflow uses: short timeouts and few retries (a
tracking server that is down delays an upload, it never hangs a trial), the
resolved tracking URI, experiments and run look-ups.
"""

from __future__ import annotations

import os

from benchflow.secrets import mask


def client(uri: str | None = None, http_timeout_s: float = 10, http_retries: int = 2):
    """An MlflowClient; ``uri=None`` is MLflow's own default store (env or ./mlflow.db).

    MLflow's HTTP client retries for minutes by default; a benchmark must not
    stall on an unreachable server (results are safe on disk), so both are bounded.
    """
    from mlflow import MlflowClient

    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(http_timeout_s))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(http_retries)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if uri and mask(uri, set()) != uri:
        # MLflow prints "View run ... at: URI" on stdout, password and all
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return MlflowClient(tracking_uri=uri)


def resolved_uri(uri: str | None) -> str:
    """The store a ``None`` URI means here and now (recorded so sync goes to the same one)."""
    if uri:
        return uri
    import mlflow

    return mlflow.get_tracking_uri()


def ensure_experiment(c, name: str) -> str:
    """The id of experiment ``name``, created if needed (safe when processes race)."""
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name)
    except MlflowException:
        exp = c.get_experiment_by_name(name)  # someone else created it meanwhile
        if exp is None:
            raise
        return exp.experiment_id


def find_run(c, experiment_id: str, tag: str, value: str):
    runs = c.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=2)
    return runs[0] if runs else None


def ui_hint(uri: str | None) -> str:
    """Where to see a run's results: the server's URL, or the ``mlflow ui`` command for a store."""
    store = mask(resolved_uri(uri), set())  # a URI may carry user:password@
    if store.startswith(("http://", "https://")):
        return f"  see them in MLflow: {store}"
    return f"  see them in MLflow: mlflow ui --backend-store-uri {store}"
