"""The API's Prometheus metrics (ServingMetrics) and the folder prometheus-client shares
between several uvicorn workers (PROMETHEUS_MULTIPROC_DIR).

Knows nothing of models or the inference log: they report to it (ServedModel says what it reads
of the model being served).
"""

from __future__ import annotations

import glob
import os
from typing import Any, Callable, Protocol

from ..categories import category_name
from ..config import Settings


SHADOW_DROP_REASONS = ("queue_full", "buffer_full", "invalid", "restart", "shutdown", "no_challenger", "load_failed")


class ServedModel(Protocol):
    """What the metrics read of the model being served (holder.LoadedModel is one)."""

    version: str
    mlflow_run_id: str | None
    loaded_at: float


class ServingMetrics:
    """The API's Prometheus metrics, in a CollectorRegistry of their own (one per app).

    With several uvicorn workers (`mlops serve --workers N` sets PROMETHEUS_MULTIPROC_DIR before
    the workers start), prometheus-client keeps each process's values in files of that folder
    and /metrics adds them up across workers: counters and histograms are summed, and gauges
    say how to combine (model ready = the minimum over live workers, version info and load time
    the maximum, buffered rows the sum). Files of live-mode gauges of workers that are gone are
    removed at each scrape.
    """

    LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiproc_dir = multiproc_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlops_api_requests", "HTTP requests answered, by route and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("mlops_api_request_duration_seconds",
                                 "Time to answer a request, by route and status.",
                                 ["method", "route", "status"], buckets=self.LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("mlops_predictions", "Products classified, by predicted class.",
                                   ["prdtypecode", "category"], registry=r)
        self.confidence = Histogram("mlops_prediction_confidence",
                                    "Probability of the predicted class.",
                                    buckets=self.CONFIDENCE_BUCKETS, registry=r)
        self.model_info = Gauge("mlops_model_version_info",
                                "1 for the model version being served (labels say which).",
                                ["model_name", "version", "mlflow_run_id"], registry=r, multiprocess_mode="livemax")
        self.model_ready = Gauge("mlops_model_ready", "1 when a champion model is loaded.", registry=r,
                                 multiprocess_mode="livemin")
        self.model_loaded_at = Gauge("mlops_model_loaded_timestamp_seconds",
                                     "When the model being served was loaded (Unix time).", registry=r,
                                     multiprocess_mode="livemax")
        self.reloads = Counter("mlops_model_reloads",
                               "Model (re)loads after the champion alias moved, by result.",
                               ["result"], registry=r)
        self.poll_errors = Counter("mlops_model_poll_errors",
                                   "Failed checks of the champion alias (registry unreachable).",
                                   registry=r)
        self.log_buffer = Gauge("mlops_inference_log_buffer_rows",
                                "Inference-log rows waiting to be written.", registry=r,
                                multiprocess_mode="livesum")
        self.log_written = Counter("mlops_inference_log_written_rows",
                                   "Inference-log rows written to PostgreSQL.", registry=r)
        self.log_dropped = Counter("mlops_inference_log_dropped_rows",
                                   "Inference-log rows lost, by reason (buffer_full, invalid, shutdown).",
                                   ["reason"], registry=r)
        self.log_write_errors = Counter("mlops_inference_log_write_errors",
                                        "Failed inference-log writes (retried).", registry=r)
        # the shadow challenger (serving/shadow.py): its worker process reports here
        self.shadow_submitted = Counter("mlops_shadow_submitted_items",
                                        "Served items handed to the shadow challenger.", registry=r)
        self.shadow_scored = Counter("mlops_shadow_scored_items",
                                     "Served items the challenger scored.", registry=r)
        self.shadow_errors = Counter("mlops_shadow_errors",
                                     "Served items the challenger failed to score (its predict raised).",
                                     registry=r)
        self.shadow_written = Counter("mlops_shadow_written_rows",
                                      "shadow_predictions rows written to PostgreSQL.", registry=r)
        self.shadow_dropped = Counter("mlops_shadow_dropped_items",
                                      "Shadow items lost, by reason (" + ", ".join(SHADOW_DROP_REASONS) + ").",
                                      ["reason"], registry=r)
        self.shadow_restarts = Counter("mlops_shadow_worker_restarts",
                                       "Shadow worker processes restarted, by reason (stalled, exited).",
                                       ["reason"], registry=r)
        self.shadow_pending = Gauge("mlops_shadow_queue_items",
                                    "Shadow items waiting to be scored.", registry=r, multiprocess_mode="livesum")
        self.shadow_version = Gauge("mlops_shadow_model_version",
                                    "The challenger version the shadow scores with (0: none).", registry=r,
                                    multiprocess_mode="livemax")
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for reason in ("buffer_full", "invalid", "shutdown"):
            self.log_dropped.labels(reason)
        for reason in SHADOW_DROP_REASONS:
            self.shadow_dropped.labels(reason)
        for reason in ("stalled", "exited"):
            self.shadow_restarts.labels(reason)
        self._children: dict[tuple, tuple] = {}
        self._class_children: dict[int, Any] = {}
        self._info_labels: tuple | None = None

    def track_buffer(self, pending: Callable[[], int]) -> None:
        """The buffer gauge follows `pending()`: read at scrape time in one process; with
        several workers (no callbacks across processes) set by `update_buffer` instead."""
        if self.multiproc_dir is None:
            self.log_buffer.set_function(pending)

    def update_buffer(self, rows: int) -> None:
        if self.multiproc_dir is not None:
            self.log_buffer.set(rows)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            s = str(status)
            children = (self.requests.labels(method, route, s), self.latency.labels(method, route, s))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, code: int, confidence: float) -> None:
        child = self._class_children.get(code)
        if child is None:
            child = self._class_children[code] = self.predictions.labels(str(code), category_name(code))
        child.inc()
        self.confidence.observe(confidence)

    def set_model(self, model_name: str, loaded: ServedModel | None) -> None:
        if self.multiproc_dir is None:
            self.model_info.clear()
        elif self._info_labels is not None:
            # A worker's file keeps every label set it ever wrote (and prometheus-client cannot
            # clear them there): the old version says 0 from now on.
            self.model_info.labels(*self._info_labels).set(0)
        self._info_labels = None
        if loaded is None:
            self.model_ready.set(0)
            return
        self._info_labels = (model_name, loaded.version, loaded.mlflow_run_id or "")
        self.model_info.labels(*self._info_labels).set(1)
        self.model_ready.set(1)
        self.model_loaded_at.set(loaded.loaded_at)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        forget_dead_workers(self.multiproc_dir)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiproc_dir)
        return generate_latest(merged)


def count_drops(dropped: dict[str, int], reason: str, n: int, counter, log, message: str,
                quiet: tuple[str, ...] = ()) -> None:
    """n items dropped for `reason`: added to `dropped` (what /health shows) and to the Prometheus
    `counter` (a labelled Counter, or None), and logged with `message` % (n, reason): every time,
    except a `quiet` reason (a full buffer drops on every submit while it lasts), only the first."""
    if n <= 0:
        return
    first = dropped[reason] == 0
    dropped[reason] += n
    if counter is not None:
        counter.labels(reason).inc(n)
    if first or reason not in quiet:
        log.warning(message, n, reason)


def multiproc_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR when this process runs as one of several API workers."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


def prepare_multiproc_dir(settings: Settings) -> str:
    """An empty PROMETHEUS_MULTIPROC_DIR for the workers about to start (the variable's folder if
    set, else $MLOPS_HOME/prometheus-multiproc), exported for them. Emptied first: files left
    by an earlier run would be added to this one's counts."""
    from pathlib import Path

    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.home / "prometheus-multiproc")
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path.resolve())
    return str(path.resolve())


def forget_dead_workers(path: str) -> None:
    """Remove the live-mode gauge files of worker processes that no longer exist (a worker
    uvicorn restarted, say), so "ready" and "version" reflect the workers serving now."""
    from prometheus_client import multiprocess

    pids = set()
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        try:
            pids.add(int(os.path.basename(f).rsplit("_", 1)[1][:-3]))
        except ValueError:
            continue
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:  # alive, another user's
            pass

