"""MLflow tracking and model registry: the only module that imports mlflow.

With no MLFLOW_TRACKING_URI, tracking and registry use a database of their own (`mlflow`) on the
same PostgreSQL server as the application, with artifacts under $MLOPS_HOME/artifacts (or
MLFLOW_ARTIFACT_ROOT). With it set (docker-compose: http://mlflow:5000), that server is used.

Lifecycle with aliases (registry stages are deprecated since MLflow 2.9):
  champion          the version in production (what the API serves)
  challenger        the newest trained version not yet decided on
  previous-champion the champion before the last promotion (what `rollback` returns to)
and version tags `stage` (Production / Archived / None), `decision`, `reason`, so the classic
lifecycle stays visible in the MLflow UI.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from .config import Settings
from .errors import MlopsError, NotFound, TransientError, Unavailable

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)

_configured: dict[tuple, str] = {}


def _mlflow():
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
    # We chose cloudpickle deliberately (see log_training); its warning on every save is noise.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    return mlflow


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    from .db import mlflow_backend_url

    return mlflow_backend_url(settings)


def configure(settings: Settings) -> str:
    """Point mlflow at the right store and ensure the experiment exists; returns its id."""
    key = (settings.mlflow_tracking_uri, str(settings.home), settings.database_url,
           settings.experiment_name, str(settings.artifacts_dir))
    mlflow = _mlflow()
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if key in _configured:
        return _configured[key]
    client = mlflow.MlflowClient()
    try:
        exp = client.get_experiment_by_name(settings.experiment_name)
        if exp is None:
            location = None
            if not uri.startswith("http"):
                settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
                location = settings.artifacts_dir.resolve().as_uri()
            try:
                exp_id = client.create_experiment(settings.experiment_name, artifact_location=location)
            except Exception:  # created concurrently by another process
                exp = client.get_experiment_by_name(settings.experiment_name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
    except MlopsError:
        raise
    except Exception as exc:
        raise TransientError(f"MLflow tracking server unreachable at {_redact(uri)}: {_redact(str(exc))}") from exc
    _configured[key] = exp_id
    return exp_id


def _redact(uri: str) -> str:
    """A URI, or a message that holds one (an MLflow client error quotes the URL it called),
    without its password."""
    from .db import redact

    return redact(uri)


def client(settings: Settings):
    configure(settings)
    return _mlflow().MlflowClient()


def _missing(exc: Exception, *, bad_name_too: bool = False) -> bool:
    """Did MLflow answer that what was asked for does not exist? Read from MLflow's error code,
    never from the message; the REST store sets it from the server's answer, or from the HTTP
    status when the body is not MLflow's (404 -> RESOURCE_DOES_NOT_EXIST). bad_name_too:
    INVALID_PARAMETER_VALUE counts as missing, which is how MLflow answers an alias that is not
    set or a version that is not a number."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (INVALID_PARAMETER_VALUE, NOT_FOUND, RESOURCE_DOES_NOT_EXIST,
                                              ErrorCode)

    if not isinstance(exc, MlflowException):
        return False
    codes = [RESOURCE_DOES_NOT_EXIST, NOT_FOUND] + ([INVALID_PARAMETER_VALUE] if bad_name_too else [])
    return exc.error_code in {ErrorCode.Name(c) for c in codes}


def unreachable(exc: BaseException) -> bool:
    """MLflow could not answer: its server or its database failed or is out of reach (HTTP 5xx
    or 429 by MLflow's error code, or a connection error before any answer). Worth retrying
    (runs.is_transient asks here)."""
    exceptions = sys.modules.get("mlflow.exceptions")  # an MLflow error implies MLflow is loaded
    if exceptions is not None and isinstance(exc, exceptions.MlflowException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(exc, (ConnectionError, TimeoutError))


@contextmanager
def _lookup(not_found: str) -> Iterator[None]:
    """Around an MLflow read of one named thing: NotFound(not_found) when it does not exist,
    TransientError when MLflow cannot answer; any other error as it is."""
    try:
        yield
    except Exception as exc:
        if _missing(exc, bad_name_too=True):
            raise NotFound(not_found) from None
        if unreachable(exc):
            raise TransientError(f"MLflow unreachable: {_redact(str(exc))}") from exc
        raise


# --- training runs --------------------------------------------------------------------------------
def log_training(
    settings: Settings,
    *,
    model,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    texts: dict[str, str],
    figures: dict[str, Any],
    input_example,
    register: bool = True,
    children: list[dict] | None = None,
) -> tuple[str, str | None]:
    """Log one training run (params, metrics, artifacts, model) and register a version.

    `children`: the search's candidates, each {name, params, metrics, tags}, logged as nested
    runs of this one (one batch call each). Returns (run_id, version). The version is registered
    last: a run that fails before that leaves no version behind, and is marked FAILED in MLflow.
    """
    mlflow = _mlflow()
    exp_id = configure(settings)
    from mlflow.models import infer_signature

    with mlflow.start_run(experiment_id=exp_id, run_name=tags.get("run_name")) as run:
        try:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.set_tags(tags)
            for child in children or []:
                _log_child(exp_id, run.info.run_id, child)
            for name, text in texts.items():
                mlflow.log_text(text, name)
            for name, fig in figures.items():
                mlflow.log_figure(fig, name)
            from . import runs

            if runs.FAULT_HOOK is not None:  # tests only: the step dies while its run is open
                runs.FAULT_HOOK("train.logging")
            signature = infer_signature(input_example, model.predict(input_example))
            info = mlflow.sklearn.log_model(
                model, name="model", signature=signature, input_example=input_example,
                registered_model_name=settings.model_name if register else None,
                await_registration_for=60,
                # skops (MLflow's default) takes minutes on a 500k-term TF-IDF vocabulary; the
                # artifact store is ours (written only by `mlops train`), so pickle is acceptable.
                serialization_format="cloudpickle",
                pip_requirements=_requirements(),
            )
        except Exception:
            mlflow.end_run(status="FAILED")
            raise
    version = str(info.registered_model_version) if register else None
    return run.info.run_id, version


def _log_child(exp_id: str, parent_id: str, child: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag

    c = _mlflow().MlflowClient()
    ts = int(time.time() * 1000)
    run = c.create_run(exp_id, run_name=child["name"], tags={"mlflow.parentRunId": parent_id})
    c.log_batch(run.info.run_id,
                metrics=[Metric(k, float(v), ts, 0) for k, v in child.get("metrics", {}).items()],
                params=[Param(k, str(v)[:500]) for k, v in child.get("params", {}).items()],
                tags=[RunTag(k, str(v)) for k, v in child.get("tags", {}).items()])
    c.set_terminated(run.info.run_id)


def child_runs(settings: Settings, run_id: str) -> list[dict]:
    """The nested runs of a run (the search's candidates), as run_info dicts."""
    c = client(settings)
    run = c.get_run(run_id)
    found = c.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)
    return [{"mlflow_run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "metrics": dict(r.data.metrics), "params": dict(r.data.params), "tags": dict(r.data.tags)}
            for r in found]


def unfinished_runs(settings: Settings) -> list[dict]:
    """The experiment's runs still RUNNING: {mlflow_run_id, start_time (ms), tags}. A process
    that dies while it logs a run leaves it so (orphan_versions.py ends those of dead steps)."""
    exp_id = configure(settings)
    try:
        found = client(settings).search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=1000)
    except Exception as exc:
        if unreachable(exc):
            raise TransientError(f"MLflow tracking server unreachable: {_redact(str(exc))}") from exc
        raise
    return [{"mlflow_run_id": r.info.run_id, "start_time": r.info.start_time, "tags": dict(r.data.tags)}
            for r in found]


def end_run(settings: Settings, run_id: str, status: str = "KILLED") -> None:
    client(settings).set_terminated(run_id, status=status)


def _requirements() -> list[str]:
    # Pin what the pickled pipeline needs, without pip-freezing the whole environment (slow).
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy")] + [
        "mlops-cli"
    ]


def log_metrics(settings: Settings, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    c = client(settings)
    ts = int(time.time() * 1000)
    from mlflow.entities import Metric

    c.log_batch(run_id, metrics=[Metric(k, float(v), ts, step or 0) for k, v in metrics.items()])


def set_run_tags(settings: Settings, run_id: str, tags: dict[str, str]) -> None:
    c = client(settings)
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))


def run_info(settings: Settings, run_id: str) -> dict:
    c = client(settings)
    with _lookup(f"No MLflow run {run_id!r}"):
        run = c.get_run(run_id)
    return {"mlflow_run_id": run_id, "status": run.info.status, "metrics": dict(run.data.metrics),
            "params": dict(run.data.params), "tags": dict(run.data.tags)}


# --- registry -----------------------------------------------------------------------------------
def _version_dict(mv, aliases: Iterable[str] | None = None) -> dict:
    return {
        "version": str(mv.version),
        "mlflow_run_id": mv.run_id,
        "source": mv.source,
        "aliases": sorted(aliases if aliases is not None else (getattr(mv, "aliases", None) or [])),
        "tags": dict(mv.tags or {}),
        "description": mv.description or "",
        "created_at": mv.creation_timestamp,
        "status": mv.status,
    }


def get_version(settings: Settings, version: str | int) -> dict:
    c = client(settings)
    with _lookup(f"Model {settings.model_name} has no version {version}"):
        mv = c.get_model_version(settings.model_name, str(version))
    return _version_dict(mv)


def version_by_alias(settings: Settings, alias: str) -> dict | None:
    c = client(settings)
    try:
        mv = c.get_model_version_by_alias(settings.model_name, alias)
    except Exception as exc:
        if _missing(exc, bad_name_too=True):  # no such model, or the alias is not set
            return None
        raise TransientError(f"MLflow registry unreachable: {_redact(str(exc))}") from exc
    return _version_dict(mv)


def list_versions(settings: Settings) -> list[dict]:
    """Every version of the registered model, newest first, with aliases and tags."""
    c = client(settings)
    try:
        versions = c.search_model_versions(f"name = '{settings.model_name}'")
        # search results carry no aliases: read them from the registered model itself
        aliases = c.get_registered_model(settings.model_name).aliases if versions else {}
    except Exception as exc:
        if _missing(exc):
            return []
        if unreachable(exc):
            raise TransientError(f"MLflow registry unreachable: {_redact(str(exc))}") from exc
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in (aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    return sorted((_version_dict(mv, by_version.get(str(mv.version), [])) for mv in versions),
                  key=lambda v: -int(v["version"]))


def set_alias(settings: Settings, alias: str, version: str | int) -> None:
    client(settings).set_registered_model_alias(settings.model_name, alias, str(version))


def delete_alias(settings: Settings, alias: str) -> None:
    c = client(settings)
    try:
        c.delete_registered_model_alias(settings.model_name, alias)
    except Exception as exc:
        if not _missing(exc):
            raise


def delete_version(settings: Settings, version: str | int, *, strict: bool = False) -> None:
    """Remove a version registered by a step that then failed: best effort, logged (the step is
    failing already; its error is the one to keep), or, `strict`, raising as any registry call."""
    try:
        client(settings).delete_model_version(settings.model_name, str(version))
    except Exception as exc:
        if strict:
            if unreachable(exc):
                raise TransientError(f"MLflow registry unreachable: {_redact(str(exc))}") from exc
            raise
        log.warning("could not delete model version %s after a failed step: %s", version, exc)


def set_version_tags(settings: Settings, version: str | int, tags: dict[str, Any]) -> None:
    c = client(settings)
    for k, v in tags.items():
        c.set_model_version_tag(settings.model_name, str(version), k, str(v))


def set_description(settings: Settings, version: str | int, description: str) -> None:
    client(settings).update_model_version(settings.model_name, str(version), description=description)


def load_model(settings: Settings, version: str | int | None = None, alias: str | None = None):
    """The fitted scikit-learn Pipeline of a version (or alias), loaded from the artifact store."""
    mlflow = _mlflow()
    configure(settings)
    if version is None and alias is None:
        raise ValueError("give a version or an alias")
    uri = f"models:/{settings.model_name}/{version}" if version is not None else \
        f"models:/{settings.model_name}@{alias}"
    try:
        return mlflow.sklearn.load_model(uri)
    except Exception as exc:
        raise Unavailable(f"Cannot load model {uri}: {_redact(str(exc))}") from exc
