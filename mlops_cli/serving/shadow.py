"""The shadow challenger: every served item is also scored by the version behind the
`challenger` alias, off the request path, and the two answers are logged side by side
(shadow_predictions, migration 011; docs/shadow.md).

On when SHADOW_ENABLED=true, or when promotion waits for live evidence (SHADOW_MIN_REQUESTS > 0):
then, whenever a challenger alias is set (a version awaits its decision), its answers to live
traffic are logged. With no challenger alias, or one on the champion's own version, nothing is
sent anywhere.

The client's answer and latency come from the champion alone. Three parts:

  request path   ShadowScorer.submit: one append to an in-memory list under a lock, bounded by
                 SHADOW_QUEUE_MAX items in flight; when full the items are dropped and counted
                 (mlops_shadow_dropped_items_total{reason="queue_full"}). It never waits.
  feed thread    (mlops-shadow-feed, in the API process) every 200 ms hands what was submitted to
                 the worker process as one message; syncs the worker's counters into the API's
                 Prometheus metrics; restarts the worker when it exited, or when one predict has
                 run longer than SHADOW_STALL_SECONDS (a hung challenger), with a growing pause.
  worker process one per API worker, started with `spawn`: follows the challenger alias as the
                 API follows the champion's (holder.ModelHolder(alias="challenger"): hot swaps;
                 while the alias points at a version that cannot be loaded, nothing is scored and
                 the items are counted, load_failed), scores each item with it and writes the
                 rows in batches (bounded buffer; dropped and counted when the database is
                 behind, retried with backoff on an outage, rows refused as data isolated).

Why a process, not a thread: the challenger costs about as much CPU per item as the champion's
whole request; in a thread it would take the API process's interpreter lock for that long (a
throughput loss near the challenger's share of the CPU), and a challenger stuck in a loop would
hold it. In its own process it uses another core, and a hung or crashing challenger is killed
and restarted without the API noticing. It runs at niceness SHADOW_NICE (19): on a busy machine
the requests get the CPU first and the shadow catches up after (or drops, counted, once its queue
is full). The cost: one more process with its own copy of the challenger in memory.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime, timezone
from queue import Empty
from typing import Any, Sequence

from .. import registry
from ..config import Settings
from .metrics import SHADOW_DROP_REASONS, ServingMetrics, count_drops

log = logging.getLogger(__name__)

# Slots of the counters the worker process shares with the API (doubles: exact integers up to
# 2**53). Written by one process at a time: the worker while it lives, the API after it is gone.
# VERSION: the challenger scored with (0: none); ALIAS_VERSION: the one its alias points at;
# LOAD_FAILED: 1 while that one could not be loaded (then VERSION is 0, and submits are counted).
(DONE, SCORED, ERRORS, WRITTEN, BUFFER_FULL, INVALID, VERSION, BUSY_SINCE, PENDING_ROWS, WRITE_ERRORS,
 NO_CHALLENGER, ALIAS_VERSION, LOAD_FAILED) = range(13)
SLOTS = 13
ERROR_BYTES = 500          # the worker's last load error, shared as text (truncated)
WORKER_DROPS = {"buffer_full": BUFFER_FULL, "invalid": INVALID, "no_challenger": NO_CHALLENGER}
SEND_SECONDS = 0.2        # how often the feed thread hands submitted items to the worker: each hand-over
#                           wakes two threads of the API process (this one, the queue's), which take the
#                           interpreter lock from the event loop for a moment; few wake-ups, not small messages
SYNC_SECONDS = 0.5        # how often it syncs counters and checks the worker
RESTART_DELAY_MAX = 300.0  # pause between restarts: doubles from 1 s up to this
HEALTHY_SECONDS = 600.0    # a worker up this long without trouble resets the pause
STOP = "stop"
LOAD_FAILURE_TRIES = 3     # tries a failing host may miss (a slow download, an outage) before it counts as gone


def shadow_active(settings: Settings) -> bool:
    """Does the API run a shadow scorer? SHADOW_ENABLED, or promotion requiring live evidence."""
    return bool(settings.shadow_enabled) or int(settings.shadow_min_requests) > 0


def load_failures(conn, settings: Settings, version: str) -> list[dict]:
    """The hosts whose shadow cannot load `version` now (store.shadow_load_failures): a worker
    that still fails records the failure again at each try of the load, at most RETRY_MAX_SECONDS
    + MODEL_POLL_SECONDS apart (serving/holder.py); a row that has gone LOAD_FAILURE_TRIES of
    those gaps without one is a host that stopped (shut down, killed, replaced), left out."""
    from .. import store
    from .holder import RETRY_MAX_SECONDS

    gap = RETRY_MAX_SECONDS + max(0.05, float(settings.model_poll_seconds))
    return store.shadow_load_failures(conn, settings.model_name, version, seen_within=LOAD_FAILURE_TRIES * gap)


def _version_number(version: str | None) -> float:
    """A registry version as a shared number (MLflow numbers its versions): 0 none, -1 other."""
    if version is None:
        return 0.0
    try:
        return float(int(version))
    except ValueError:
        return -1.0


class ShadowScorer:
    """The API side of the shadow challenger: see the module docstring. `submit` is the only
    method the request path calls; `start` and `close` belong to the app's lifespan."""

    def __init__(self, settings: Settings, *, metrics: ServingMetrics | None = None,
                 capacity: int | None = None, stall_seconds: float | None = None):
        import multiprocessing

        self.settings = settings
        self.metrics = metrics
        self.capacity = max(1, int(capacity if capacity is not None else settings.shadow_queue_max))
        self.stall_seconds = max(0.1, float(stall_seconds if stall_seconds is not None
                                            else settings.shadow_stall_seconds))
        self._ctx = multiprocessing.get_context("spawn")
        self._shared = self._ctx.RawArray("d", SLOTS)
        self._error = self._ctx.Array("c", ERROR_BYTES)  # with a lock: text is not written atomically
        self._lock = threading.Lock()
        self._items: list[tuple] = []   # submitted, not yet handed to the worker
        self._n_items = 0               # served items in _items
        self._sent = 0                  # items handed to a worker, ever (the worker counts DONE)
        self._submitted = 0
        self._refused = {"queue_full": 0, "load_failed": 0}  # counted on the request path, not submitted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = None
        self._queue = None
        self._closed = False
        self._restart_at = 0.0
        self._restart_delay = 1.0
        self._started_at = 0.0
        self._synced = [0.0] * SLOTS
        self._sync_lock = threading.Lock()
        self._counted = {"submitted": 0, "queue_full": 0, "load_failed": 0}
        self.dropped = dict.fromkeys(SHADOW_DROP_REASONS, 0)
        self.restarts = {"stalled": 0, "exited": 0}
        self.last_error: str | None = None

    # -- request path -----------------------------------------------------------------------------
    def submit(self, champion_version: str, pairs: Sequence[tuple[str, str | None]], answers: Sequence[dict],
               top_k: int) -> bool:
        """Hand the champion's answers to one request (as log_predictions made them) to the
        challenger. Never blocks, never raises; False when not taken (no challenger, the
        champion's own version; or, counted as dropped, the queue full or a challenger that
        cannot be loaded). The rows take the champion's rows' time (`answers.logged_at`)."""
        version = self._shared[VERSION]
        if self._closed or version == _version_number(champion_version):
            return False
        n = len(pairs)
        if not version:
            if self._shared[LOAD_FAILED]:  # evidence the challenger should have given: counted, not silent
                with self._lock:
                    self._refused["load_failed"] += n
            return False
        logged_at = getattr(answers, "logged_at", None) or datetime.now(timezone.utc)
        with self._lock:
            if self._n_items + self._sent - int(self._shared[DONE]) + n > self.capacity:
                self._refused["queue_full"] += n
                return False
            # compact here (a few tuples per request, evenly spread), not in one burst at hand-over
            self._items.append((logged_at, champion_version, top_k,
                                [(a["request_id"], p[0], p[1], a["prdtypecode"]) for p, a in zip(pairs, answers)]))
            self._n_items += n
            self._submitted += n
        return True

    @property
    def pending(self) -> int:
        """Items submitted and not yet scored (or given up on)."""
        return self._n_items + self._sent - int(self._shared[DONE])

    # -- lifespan ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker process (it loads the challenger, if any) and the feed thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._start_worker()
        self._thread = threading.Thread(target=self._run, name="mlops-shadow-feed", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Send what is left, let the worker score and write it (up to `timeout`), stop it.
        True when nothing was lost."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._send()
        proc, queue = self._proc, self._queue
        if proc is not None:
            try:
                queue.put(STOP)
            except (OSError, ValueError):
                pass
            proc.join(max(1.0, timeout))
            if proc.is_alive():
                log.error("shadow worker (pid %s) did not stop within %.0fs: killed", proc.pid, timeout)
                proc.kill()
                proc.join(5)
        lost = self.pending + int(self._shared[PENDING_ROWS])
        self._shared[DONE] = self._sent
        self._shared[PENDING_ROWS] = 0
        self._forget_worker_state()
        if lost:
            log.error("shadow: %d item(s) not scored or not written at shutdown", lost)
            self._drop("shutdown", lost)
        self._sync()
        self._discard_queue()
        self._proc = None
        return lost == 0

    def stats(self) -> dict:
        """For /health: the challenger shadowed, the one its alias points at and why they differ
        (load_error: the worker's, now), the worker, the counts."""
        version, alias = self._shared[VERSION], self._shared[ALIAS_VERSION]
        proc = self._proc
        with self._error.get_lock():
            load_error = self._error.value.decode("utf-8", "ignore") or None
        return {"active": True, "challenger_version": str(int(version)) if version > 0 else None,
                "challenger_alias_version": str(int(alias)) if alias > 0 else None, "load_error": load_error,
                "worker_pid": proc.pid if proc is not None and proc.is_alive() else None,
                "pending": self.pending, "capacity": self.capacity, "submitted": self._submitted,
                "scored": int(self._shared[SCORED]), "errors": int(self._shared[ERRORS]),
                "written": int(self._shared[WRITTEN]), "dropped": self._dropped_now(),
                "restarts": dict(self.restarts), "last_error": self.last_error}

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted before this call is scored and written (tests, demo)."""
        deadline = time.monotonic() + timeout
        self._send()
        while time.monotonic() < deadline:
            if self.pending <= 0 and self._shared[PENDING_ROWS] == 0:
                self._sync()
                return True
            time.sleep(0.02)
        return False

    # -- the feed thread --------------------------------------------------------------------------
    def _run(self) -> None:
        next_sync = 0.0
        while not self._stop.wait(SEND_SECONDS):
            try:
                self._send()
                now = time.monotonic()
                if now >= next_sync:
                    self._sync()
                    self._supervise()
                    next_sync = now + SYNC_SECONDS
            except Exception:  # pragma: no cover - keep feeding whatever happened
                log.exception("shadow feed error")

    def _send(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            n, self._n_items = self._n_items, 0
            self._sent += n  # under the lock: `pending` stays exact
        if not items:
            return
        if self._queue is None:  # closed meanwhile
            self._unsend(n, "shutdown")
            return
        try:  # items: (time, champion version, top_k, [(request_id, designation, description, champion code)])
            self._queue.put(items)  # unbounded, never blocks: the queue's own thread writes the pipe
        except (OSError, ValueError) as exc:  # pragma: no cover - a queue closed under us
            self.last_error = f"shadow queue: {exc}"
            self._unsend(n, "restart")

    def _unsend(self, n: int, reason: str) -> None:
        """Items counted as sent that never reached a worker: not in flight, dropped."""
        with self._lock:
            self._sent -= n
        self._drop(reason, n)

    def _drop(self, reason: str, n: int) -> None:
        count_drops(self.dropped, reason, n, self.metrics and self.metrics.shadow_dropped, log,
                    "shadow: %d item(s) dropped (%s)", quiet=("queue_full", "buffer_full", "load_failed"))

    def _dropped_now(self) -> dict:
        out = dict(self.dropped)
        for reason, n in self._refused.items():  # not synced yet
            out[reason] += n - self._counted[reason]
        for reason, slot in WORKER_DROPS.items():
            out[reason] = int(self._shared[slot])
        return out

    def _sync(self) -> None:
        """The worker's counters and the request path's into the metrics, as increments."""
        with self._sync_lock:  # the feed thread and flush() both sync
            self._sync_locked()

    def _sync_locked(self) -> None:
        shared = list(self._shared)
        deltas = {i: shared[i] - self._synced[i] for i in (SCORED, ERRORS, WRITTEN, *WORKER_DROPS.values())}
        self._synced = shared
        submitted = self._submitted
        new_submitted = submitted - self._counted["submitted"]
        self._counted["submitted"] = submitted
        for reason, n in list(self._refused.items()):
            self._drop(reason, n - self._counted[reason])
            self._counted[reason] = n
        if self.metrics is None:
            return
        m = self.metrics
        if new_submitted:
            m.shadow_submitted.inc(new_submitted)
        counters = [(SCORED, m.shadow_scored), (ERRORS, m.shadow_errors), (WRITTEN, m.shadow_written)]
        for slot, counter in counters + [(s, m.shadow_dropped.labels(r)) for r, s in WORKER_DROPS.items()]:
            if deltas[slot] > 0:
                counter.inc(deltas[slot])
        m.shadow_pending.set(self.pending)
        m.shadow_version.set(max(0.0, shared[VERSION]))

    def _supervise(self) -> None:
        """Restart a worker that exited, or whose predict has run longer than SHADOW_STALL_SECONDS."""
        proc = self._proc
        if proc is None or self._stop.is_set():
            return
        busy = self._shared[BUSY_SINCE]
        if not proc.is_alive():
            reason = "exited"
        elif busy and time.time() - busy > self.stall_seconds:
            reason = "stalled"
        else:
            if time.monotonic() - self._started_at > HEALTHY_SECONDS:
                self._restart_delay = 1.0  # healthy for long enough: the next restart is quick again
            return
        if time.monotonic() < self._restart_at:
            return
        self._restart(reason)

    def _restart(self, reason: str) -> None:
        proc = self._proc
        if proc.is_alive():
            log.error("shadow: the challenger's predict has run for over %.0fs (SHADOW_STALL_SECONDS): "
                      "worker pid %s killed and restarted", self.stall_seconds, proc.pid)
            proc.kill()
        else:
            log.error("shadow: worker pid %s exited (code %s): restarted", proc.pid, proc.exitcode)
        proc.join(5)
        self.last_error = f"worker {reason} (pid {proc.pid}, exit code {proc.exitcode})"
        self.restarts[reason] += 1
        if self.metrics:
            self.metrics.shadow_restarts.labels(reason).inc()
        with self._lock:  # the worker is gone: what it had not finished is lost
            lost = self._sent - int(self._shared[DONE]) + int(self._shared[PENDING_ROWS])
            self._shared[DONE] = self._sent
        self._shared[PENDING_ROWS] = 0
        self._shared[BUSY_SINCE] = 0
        self._forget_worker_state()  # nothing is submitted until the new worker has its challenger
        self._drop("restart", lost)
        self._discard_queue()
        self._restart_at = time.monotonic() + self._restart_delay
        self._restart_delay = min(RESTART_DELAY_MAX, self._restart_delay * 2)
        self._start_worker()

    def _forget_worker_state(self) -> None:
        """What only a live worker knows: its challenger, its alias, its load error."""
        self._shared[VERSION] = self._shared[ALIAS_VERSION] = self._shared[LOAD_FAILED] = 0
        with self._error.get_lock():
            self._error.value = b""

    def _start_worker(self) -> None:
        self._queue = self._ctx.Queue()
        self._proc = self._ctx.Process(target=worker_main, name="mlops-shadow-worker", daemon=True,
                                       args=(self.settings, self._queue, self._shared, self.capacity, os.getpid(),
                                             os.environ.get("MLOPS_LOG_FORMAT", "text"), self._error))
        self._proc.start()
        self._started_at = time.monotonic()

    def _discard_queue(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.cancel_join_thread()  # never wait on a pipe nobody reads any more
            queue.close()


# --- the worker process ------------------------------------------------------------------------------
class _RowWriter:
    """The worker's buffered writer of shadow_predictions rows: a batch every
    INFERENCE_LOG_FLUSH_SECONDS (sooner at BATCH rows), backoff on an outage (rows kept), rows
    the database refuses as data isolated and dropped (counted), new rows dropped (counted)
    while the buffer holds SHADOW_QUEUE_MAX rows."""

    BATCH = 1000

    def __init__(self, settings: Settings, shared, capacity: int):
        self.settings = settings
        self.shared = shared
        self.capacity = capacity
        self.flush_seconds = max(0.01, float(settings.inference_log_flush_seconds))
        self.rows: list[dict] = []
        self.loads: list[tuple[str, str | None]] = []  # (version, error or None: loaded) to record
        self.conn = None
        self.deadline = time.monotonic() + self.flush_seconds
        self.retry_at = 0.0
        self.backoff = 0.2

    def add(self, rows: list[dict]) -> None:
        room = max(0, self.capacity - len(self.rows))
        if not self.rows:
            self.deadline = time.monotonic() + self.flush_seconds
        self.rows.extend(rows[:room])
        if len(rows) > room:
            if self.shared[BUFFER_FULL] == 0:
                log.warning("shadow: the database is behind: rows dropped (buffer_full)")
            self.shared[BUFFER_FULL] += len(rows) - room
        self.shared[PENDING_ROWS] = len(self.rows)

    def wait_seconds(self) -> float:
        """How long the worker may wait for items before this writer has something to do."""
        if not self.rows:
            return 0.5
        return min(0.5, max(0.005, max(self.deadline, self.retry_at) - time.monotonic()))

    def note_load(self, version: str, error: str | None) -> None:
        """Record, with the next write, that `version` failed to load (`error`) or loaded (only
        a version's latest state is kept while the database is away)."""
        self.loads = [pending for pending in self.loads if pending[0] != version] + [(version, error)]

    def maybe_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.loads and now >= self.retry_at:
            self._write_loads()
        if not self.rows or now < self.retry_at or not (force or len(self.rows) >= self.BATCH or now >= self.deadline):
            return
        while self.rows:
            batch = self.rows[:self.BATCH]
            done = self._write(batch)
            del self.rows[:done]
            if done < len(batch):
                break
        self.shared[PENDING_ROWS] = len(self.rows)
        self.deadline = time.monotonic() + self.flush_seconds

    def _connection(self):
        from .. import db

        if self.conn is None or self.conn.closed:
            self.conn = db.connect(self.settings, application_name="mlops-shadow")
        return self.conn

    def _insert(self, rows: list[dict]) -> None:
        from .. import store

        store.insert_shadow_rows(self._connection(), rows)
        self.conn.commit()

    def _write_loads(self) -> None:
        """shadow_load_failures (promotion reads why a challenger has no evidence): kept for the
        retry on an outage, dropped (logged) when refused."""
        import socket

        from .. import store
        from .inference_log import write_is_transient

        while self.loads:
            version, error = self.loads[0]
            try:
                conn = self._connection()
                store.record_shadow_load(conn, model_name=self.settings.model_name, model_version=version,
                                         host=socket.gethostname(), error=error)
                conn.commit()
            except Exception as exc:
                transient = write_is_transient(exc)
                self._failed(exc, transient)
                if transient:
                    return
                log.error("shadow: could not record the load of version %s: %s", version, str(exc).strip())
            del self.loads[0]

    def _write(self, rows: list[dict]) -> int:
        """Write `rows`; how many are done with (written, or refused and dropped): fewer than
        all on an outage (the rest stay buffered for the retry)."""
        from .inference_log import write_is_transient

        try:
            self._insert(rows)
        except Exception as exc:
            transient = write_is_transient(exc)
            self._failed(exc, transient)
            if transient:
                return 0
            log.error("shadow: the database refused a batch of %d rows (%s); writing them one by one",
                      len(rows), str(exc).strip())
            for i, row in enumerate(rows):
                try:
                    self._insert([row])
                except Exception as one:
                    transient = write_is_transient(one)
                    self._failed(one, transient)
                    if transient:
                        return i
                    self.shared[INVALID] += 1
                    log.error("shadow: row %s dropped: %s", row.get("request_id"), one)
                    continue
                self.shared[WRITTEN] += 1
            return len(rows)
        self.shared[WRITTEN] += len(rows)
        self.backoff, self.retry_at = 0.2, 0.0
        return len(rows)

    def _failed(self, exc: BaseException, outage: bool) -> None:
        """Close the connection, count the failure; after an outage, hold the next write back
        (the pause doubles each time)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        self.shared[WRITE_ERRORS] += 1
        if outage:
            log.warning("shadow: write failed (%s); %d rows kept, retry in %.1fs", str(exc).strip(),
                        len(self.rows), self.backoff)
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(30.0, self.backoff * 2)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self.loads:
            self._write_loads()
        while self.rows and time.monotonic() < deadline:
            self.retry_at = min(self.retry_at, time.monotonic())
            self.maybe_flush(force=True)
            if self.rows:
                time.sleep(min(self.backoff, max(0.0, deadline - time.monotonic())))
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _predict(loaded, pairs: list, top_k: int, shared):
    """The challenger's predict, its start shared (the API's stall watchdog reads it)."""
    from .. import runs

    shared[BUSY_SINCE] = time.time()
    try:
        if runs.FAULT_HOOK is not None:  # tests only: a challenger that raises or hangs
            runs.FAULT_HOOK("shadow")
        return loaded.predict(pairs, top_k)
    finally:
        shared[BUSY_SINCE] = 0


def _score(batch: list, loaded, shared, writer: _RowWriter) -> None:
    """Score a message's requests with the challenger, in one predict (a batch costs less per
    item than items one by one); when it raises, request by request, so that one bad request
    costs only its own items. Their rows go to the writer."""
    todo = [r for r in batch if loaded is not None and loaded.version != r[1]]
    skipped = sum(len(r[3]) for r in batch) - sum(len(r[3]) for r in todo)
    if skipped:  # in flight when the alias went, or moved onto the champion: nothing to compare, counted
        shared[NO_CHALLENGER] += skipped
        shared[DONE] += skipped
    if not todo:
        return
    started = time.perf_counter()
    try:
        pairs = [(d, x) for r in todo for _rid, d, x, _code in r[3]]
        whole = _predict(loaded, pairs, max(r[2] for r in todo), shared)
    except Exception:
        whole = None
    if whole is not None:
        ms = (time.perf_counter() - started) * 1000.0 / max(1, len(pairs))
        at = 0
        for r in todo:
            _rows(r, loaded, whole, at, ms, shared, writer)
            at += len(r[3])
        return
    for r in todo:
        n = len(r[3])
        started = time.perf_counter()
        try:
            result = _predict(loaded, [(d, x) for _rid, d, x, _code in r[3]], r[2], shared)
        except Exception as exc:
            first = shared[ERRORS] == 0
            shared[ERRORS] += n
            shared[DONE] += n
            if first or int(shared[ERRORS]) % 1000 < n:
                log.error("shadow: challenger version %s failed to score %d item(s): %s (%d so far)",
                          loaded.version, n, exc, int(shared[ERRORS]))
            continue
        _rows(r, loaded, result, 0, (time.perf_counter() - started) * 1000.0 / max(1, n), shared, writer)


def _rows(request: tuple, loaded, result, offset: int, ms: float, shared, writer: _RowWriter) -> None:
    """The rows of one request's items: result rows offset.. (its top_k first classes)."""
    logged_at, champion_version, top_k, items = request
    writer.add([{"logged_at": logged_at, "request_id": rid, "item_index": i, "champion_version": champion_version,
                 "champion_code": int(code), "challenger_version": loaded.version,
                 "predicted_code": int(result.codes[offset + i]), "confidence": float(result.confidence[offset + i]),
                 "top_k": [{"prdtypecode": int(c), "probability": float(p)}
                           for c, p in zip(result.top_codes[offset + i][:top_k], result.top_proba[offset + i][:top_k])],
                 "latency_ms": ms}
                for i, (rid, _d, _x, code) in enumerate(items)])
    shared[SCORED] += len(items)
    shared[DONE] += len(items)


def _worker_logging(log_format: str) -> None:
    import json

    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(type("Json", (logging.Formatter,), {"format": lambda self, r: json.dumps(
            {"time": self.formatTime(r), "level": r.levelname, "logger": r.name, "message": r.getMessage()})})())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [shadow] %(message)s", "%H:%M:%S"))
    root = logging.getLogger("mlops_cli")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _share_state(holder, shared, error, shown: dict, writer: _RowWriter | None = None) -> None:
    """The challenger to score with, the alias's version and the load error, for the API. While
    the alias points at a version that failed to load, the old one is not scored with (its rows
    would be evidence for a version no longer awaiting a decision): VERSION 0, LOAD_FAILED 1.
    `shown`: what was shared last (the error text, whether the load had failed, the versions
    whose load failure or success `writer` was given to record)."""
    loaded, failed = holder.current, holder.load_failed
    shared[ALIAS_VERSION] = _version_number(holder.alias_version)
    if failed:
        shared[LOAD_FAILED] = 1
        shared[VERSION] = 0
    else:
        shared[VERSION] = _version_number(loaded.version if loaded else None)
        shared[LOAD_FAILED] = 0
    if failed and not shown["failed"]:  # once; the holder logs each failed retry
        log.error("shadow: the challenger alias points at version %s, which cannot be loaded: nothing is "
                  "scored until it loads or the alias moves (items dropped: load_failed)", holder.alias_version)
    shown["failed"] = failed
    if writer is not None:  # the database's copy, on a change only (promotion reads it)
        # a failure again at each retry too: its last_at says this host still fails (a host gone
        # stops refreshing it, and readers leave it out: load_failures)
        if failed and (shown.get("failed_version") != holder.alias_version
                       or shown.get("failures") != holder.failures):
            writer.note_load(holder.alias_version, holder.last_error or "cannot be loaded")
            shown["failed_version"], shown["failures"] = holder.alias_version, holder.failures
        elif not failed and loaded is not None and shown.get("loaded_version") != loaded.version:
            writer.note_load(loaded.version, None)
            shown["loaded_version"] = loaded.version
            if shown.get("failed_version") == loaded.version:
                shown["failed_version"] = None
    # the holder's error, while it says why nothing is scored: not a load error left over once the
    # alias is back on the version held (the holder clears it only on a load or an alias gone)
    text = (holder.last_error if failed or not holder.alias_readable else None) or ""
    if text != shown["text"]:
        with error.get_lock():
            error.value = text.encode("utf-8")[:ERROR_BYTES - 1]
        shown["text"] = text


def worker_main(settings: Settings, queue, shared, capacity: int, parent_pid: int, log_format: str,
                error) -> None:
    """The worker process: follow the challenger alias, score what the API sends, write the rows.
    Exits on STOP (the API's close), SIGTERM (after writing what it holds), or when the API is gone."""
    from .holder import ModelHolder

    _worker_logging(log_format)
    if settings.shadow_nice:
        try:  # best effort: the API's requests come first when the CPU is short (the queue then drops)
            os.nice(int(settings.shadow_nice))
        except OSError as exc:  # pragma: no cover - a platform without it
            log.warning("shadow: could not lower the worker's priority (SHADOW_NICE): %s", exc)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the API, which stops us (close)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    holder = ModelHolder(settings, alias=registry.CHALLENGER)
    holder.start(background=True)
    writer = _RowWriter(settings, shared, capacity)
    shown = {"text": "", "failed": False}
    try:
        while not stopping.is_set() and os.getppid() == parent_pid:
            _share_state(holder, shared, error, shown, writer)
            try:
                batch: Any = queue.get(timeout=min(0.5, writer.wait_seconds()))
            except Empty:
                batch = None
            except (EOFError, OSError):
                break
            if isinstance(batch, str) and batch == STOP:
                break
            if batch:
                _score(batch, holder.current, shared, writer)
            writer.maybe_flush()
    finally:
        shared[VERSION] = shared[LOAD_FAILED] = 0
        holder.stop(timeout=2.0)
        writer.close(timeout=5.0)
        shared[PENDING_ROWS] = len(writer.rows)
