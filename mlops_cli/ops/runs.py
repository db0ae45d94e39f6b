"""Pipeline runs (the audit trail) and the catalogue: list, detail, what a run said, and
loading the next batch."""

from __future__ import annotations

from pathlib import Path

from .. import store
from ..config import Settings
from ..errors import Invalid
from ..vocab import Pipeline, RunStatus, Step, values
from .common import one_of

UPSTREAM_DEPTH = 20


def list_runs(conn, *, limit: int = 20, pipeline: str | None = None, step: str | None = None,
              status: str | None = None, parent_run_id: int | None = None) -> list[dict]:
    """pipeline_runs rows, newest first (what ran, when, who started it, how it ended)."""
    return store.list_runs(conn, limit=int(limit), pipeline=one_of(pipeline, values(Pipeline), "pipeline"),
                           step=step or None, status=one_of(status, values(RunStatus), "status"),
                           parent_run_id=parent_run_id)


def get_run(conn, run_id: int) -> dict | None:
    return store.get_run(conn, int(run_id))


def last_pipeline_run(conn, pipeline: str) -> dict | None:
    """The newest pipeline-level run of `pipeline` (weekly, daily, retrain) with its steps."""
    rows = store.list_runs(conn, limit=1, pipeline=pipeline, step=Step.PIPELINE.value)
    if not rows:
        return None
    row = rows[0]
    row["steps"] = sorted(store.list_runs(conn, limit=50, parent_run_id=row["id"]), key=lambda r: r["id"])
    return row


def run_detail(conn, run_id: int) -> dict | None:
    """A run with its parent, its children (the steps of a pipeline run) and its upstream chain
    (the runs it consumed: promote -> evaluate -> train -> load), nearest first."""
    run = store.get_run(conn, int(run_id))
    if run is None:
        return None
    children = sorted(store.list_runs(conn, limit=200, parent_run_id=run["id"]), key=lambda r: r["id"])
    upstream, seen = [], {run["id"]}
    nxt = run.get("upstream_run_id")
    while nxt is not None and nxt not in seen and len(upstream) < UPSTREAM_DEPTH:
        row = store.get_run(conn, nxt)
        if row is None:
            break
        upstream.append(row)
        seen.add(nxt)
        nxt = row.get("upstream_run_id")
    parent = store.get_run(conn, run["parent_run_id"]) if run.get("parent_run_id") else None
    return {"run": run, "parent": parent, "children": children, "upstream": upstream}


def run_message(run: dict | None) -> str:
    """The one-line result of a run: its error, else its outputs' message."""
    if not run:
        return ""
    return run.get("error") or (run.get("outputs") or {}).get("message") or ""


# --- the catalogue ------------------------------------------------------------------------------------
def is_empty(conn) -> bool:
    """True when nothing happened yet: no product loaded and no pipeline run recorded."""
    counts = store.catalogue_counts(conn) or {}
    return not counts.get("products") and not counts.get("batches") and not store.list_runs(conn, limit=1)


def catalogue_counts(conn) -> dict:
    return store.catalogue_counts(conn) or {"products": 0, "feedback_rows": 0, "batches": 0, "rejected": 0}


def catalogue_growth(conn) -> list[dict]:
    """Catalogue size after each batch (store.catalogue_growth)."""
    return [{**r, "catalogue_rows": int(r["catalogue_rows"] or 0)} for r in store.catalogue_growth(conn)]


def data_dirs(settings: Settings) -> list[Path]:
    """The folders of MLOPS_X_PATH and MLOPS_Y_PATH (resolved): where the control room may load from."""
    return list(dict.fromkeys(Path(p).resolve().parent for p in (settings.x_path, settings.y_path) if p.strip()))


def check_in_data_dir(settings: Settings, path: str | None, label: str) -> None:
    """Refuse a source path outside data_dirs (symlinks and '..' resolved first) before anything
    reads it; the message says nothing of the file (whether it exists, what it holds)."""
    if not (path or "").strip():
        return  # the configured file
    dirs = data_dirs(settings)
    target = Path(path.strip()).resolve()
    if not any(target.is_relative_to(d) for d in dirs):
        where = (" or ".join(str(d) for d in dirs) if dirs else
                 "nowhere: neither MLOPS_X_PATH nor MLOPS_Y_PATH is set")
        raise Invalid(f"{label} file refused: the control room loads only files in the folder of MLOPS_X_PATH "
                      f"or MLOPS_Y_PATH ({where}); load any other file with `mlops load --x-path ... "
                      f"--y-path ...`")


def load(settings: Settings, trigger, *, x_path: str | None = None, y_path: str | None = None,
         as_of=None, force: bool = False, conn=None, within_data_dir: bool = False):
    """Load the next batch (steps.load.load; x/y default to MLOPS_X_PATH / MLOPS_Y_PATH).

    within_data_dir (the control room: a path typed in a form is read by the server): x/y must be
    in the folder of MLOPS_X_PATH or MLOPS_Y_PATH (check_in_data_dir)."""
    from ..runs import with_retries
    from ..steps.load import load as step

    if within_data_dir:
        check_in_data_dir(settings, x_path, "X")
        check_in_data_dir(settings, y_path, "Y")

    def call(c):
        return step(c, settings, trigger, x_path=(x_path or "").strip() or None,
                    y_path=(y_path or "").strip() or None, as_of=as_of, force=bool(force))

    return call(conn) if conn is not None else with_retries(settings, call)


def api_audit(conn, *, limit: int = 100, route: str | None = None) -> list[dict]:
    """The latest control API requests (api_audit): who, when, route, parameters, status code."""
    return store.list_api_audit(conn, limit=limit, route=route)
