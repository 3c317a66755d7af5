"""The MLflow client benchflow uses: short timeouts and few retries (a
tracking server that is down delays an upload, it never hangs a trial), the
resolved tracking URI, experiments and run look-ups.
"""

from __future__ import annotations

import logging
import os

from benchflow.secrets import mask

log = logging.getLogger("benchflow.tracking")

# What the MLflow 3 UI opens an experiment on: a benchmark is a table of runs (MLflow's
# "Machine learning" kind), not a GenAI app's traces. 3.x UIs without the sidebar's
# "GenAI / Model training" switch take the kind from this experiment tag (and infer one,
# or ask, when it is missing); UIs with the switch (3.17 here) take it from the switch,
# which a link sets with ``?workflowType=`` (:func:`experiment_url`). docs/results.md.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_WORKFLOW = "machine_learning"


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
    """The id of experiment ``name``, created if needed (safe when processes race).

    benchflow's experiments are tagged as MLflow "Machine learning" experiments
    (:data:`EXPERIMENT_KIND_TAG`), so the UI opens them on their runs table; one that
    exists without the tag gets it, one whose kind someone chose keeps it.
    """
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            exp = c.get_experiment_by_name(name)  # someone else created it meanwhile
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    ensure_experiment_kind(c, exp)
    return exp.experiment_id


def ensure_experiment_kind(c, exp) -> None:
    """Tag ``exp`` (an MLflow ``Experiment``) as a "Machine learning" experiment unless it
    has a kind already (set by a user in the UI, or by anyone else: never overwritten).
    A store that refuses (a user who may read but not edit it) only costs the landing page."""
    from mlflow.exceptions import MlflowException

    if EXPERIMENT_KIND_TAG in (exp.tags or {}):
        return
    try:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except MlflowException as exc:
        log.debug("could not tag experiment %s as %s: %s", exp.name, EXPERIMENT_KIND, exc)


def find_run(c, experiment_id: str, tag: str, value: str):
    runs = c.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=2)
    return runs[0] if runs else None


def experiment_url(base: str, experiment_id: str) -> str:
    """The link to an experiment in the MLflow UI at ``base`` that opens its runs table.

    Without ``workflowType``, a UI with the GenAI / Model training switch opens every
    experiment in the view the browser last used, GenAI by default (its "Overview",
    empty for a benchmark); UIs without the switch go by :data:`EXPERIMENT_KIND_TAG`.
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType={UI_WORKFLOW}"


def ui_hint(uri: str | None, experiment_id: str | None = None) -> str:
    """Where to see a run's results: the server's URL, or the ``mlflow ui`` command for a
    store; with ``experiment_id``, the link to the experiment's runs table."""
    store = mask(resolved_uri(uri), set())  # a URI may carry user:password@
    if store.startswith(("http://", "https://")):
        where = experiment_url(store, experiment_id) if experiment_id else store
        return f"  see them in MLflow: {where}"
    hint = f"  see them in MLflow: mlflow ui --backend-store-uri {store}"
    if experiment_id:
        hint += f"\n  then open {experiment_url('http://127.0.0.1:5000', experiment_id)}"
    return hint
