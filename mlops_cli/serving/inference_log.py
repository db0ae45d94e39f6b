"""The inference log: the rows /predict answers become (log_predictions), and the buffered
writer that puts them in PostgreSQL (InferenceLogger).

The request path only appends to a bounded in-memory buffer (INFERENCE_LOG_BUFFER rows). A
writer thread prepares new rows every 50 ms (textstats features with the vocabulary of the
model that made the prediction, reusing the predictor's cleaned text; the COPY line), so its
CPU is spread evenly, and every INFERENCE_LOG_FLUSH_SECONDS (sooner when a batch is large)
writes what is buffered with one COPY. On a database error the rows stay buffered and the
write is retried with exponential backoff (a fresh connection each time); nothing is lost
while the buffer has room. When it is full, new rows are dropped and counted (metric
mlops_inference_log_dropped_rows_total{reason="buffer_full"}). Rows the database refuses
as data (not as an outage) are isolated row by row and dropped with reason="invalid".
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import store, textstats
from ..categories import category_name
from ..config import Settings
from ..jsonvalues import storable
from .metrics import ServingMetrics, count_drops

if TYPE_CHECKING:
    from .holder import LoadedModel
    from .predictor import Predictions

log = logging.getLogger(__name__)


def write_is_transient(exc: BaseException) -> bool:
    """A database outage (retry the same rows) rather than rows the database refuses: the
    pipeline's rule (runs.is_transient), plus what only a writer that starts with the API meets:
    the table not created yet (42P01: migrations still running), a socket error, and an error
    with no SQLSTATE (the connection broke before the server answered)."""
    import psycopg2

    from ..runs import is_transient

    if is_transient(exc) or isinstance(exc, OSError):
        return True
    if isinstance(exc, psycopg2.Error):
        code = getattr(exc, "pgcode", None) or ""
        return code == "42P01" or not code
    return False


def _clean(text: Any) -> str:
    """The text as PostgreSQL holds it: NUL and lone surrogates (JSON "\\ud800" escapes) become
    U+FFFD, as in every stored text (storable). Not deleted: the model read "a\\x00b" as two
    words, and the logged text is what a label trains on."""
    return storable("" if text is None else str(text))


class InferenceLogger:
    """Bounded buffer + writer thread for inference_log rows. See the module docstring.

    `log(row)` takes a dict with the inference_log columns (request_id, model_version,
    productid, designation, description, predicted_code, confidence, top_k, latency_ms,
    logged_at, source) plus `vocabulary` (the serving model's, for n_oov). It never blocks on
    the database and never raises.
    """

    BATCH_ROWS = 2000  # rows per COPY; the writer wakes early when this many are waiting
    PREPARE_SECONDS = 0.05  # how often the writer prepares (text statistics, COPY line) new rows

    def __init__(self, settings: Settings, *, metrics: ServingMetrics | None = None,
                 connect: Callable[[], Any] | None = None, capacity: int | None = None,
                 flush_seconds: float | None = None, backoff_initial: float = 0.2,
                 backoff_max: float = 30.0):
        from .. import db

        self.settings = settings
        self.metrics = metrics
        self.connect = connect or (lambda: db.connect(settings, application_name="mlops-inference-log"))
        self.capacity = max(1, int(capacity if capacity is not None else settings.inference_log_buffer))
        self.flush_seconds = max(0.01, float(flush_seconds if flush_seconds is not None
                                             else settings.inference_log_flush_seconds))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._queue: deque[dict] = deque()
        self._fresh: list[dict] = []  # rows also in _queue, not yet prepared
        self._in_flight: list[dict] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # one writer at a time (thread, or a synchronous flush)
        self._accepted = 0   # rows accepted into the buffer, ever
        self._done = 0       # rows written or given up on (invalid), ever; FIFO, so <= _accepted
        self._stopping = False
        self._flush_requested = False
        self._thread: threading.Thread | None = None
        self._conn = None
        self._retry_at = 0.0
        self._backoff = backoff_initial
        self.written = 0
        self.dropped: dict[str, int] = {"buffer_full": 0, "invalid": 0, "shutdown": 0}
        self.last_error: str | None = None
        if metrics is not None:
            metrics.track_buffer(lambda: self.pending)

    # -- request path -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._in_flight)

    def log(self, row: dict) -> bool:
        """Buffer one row; False (and counted) when the buffer is full."""
        return self.log_many([row]) == 1

    def log_many(self, rows: Sequence[dict]) -> int:
        """Buffer rows; returns how many were accepted (the rest are dropped and counted)."""
        with self._cond:
            room = max(0, self.capacity - len(self._queue) - len(self._in_flight))
            take = rows[:room]
            self._queue.extend(take)
            self._fresh.extend(take)
            self._accepted += len(take)
            if len(take) < len(rows):
                self._count_dropped("buffer_full", len(rows) - len(take))
            if len(self._queue) >= self.BATCH_ROWS:
                self._cond.notify_all()
        return len(take)

    def _count_dropped(self, reason: str, n: int) -> None:
        count_drops(self.dropped, reason, n, self.metrics and self.metrics.log_dropped, log,
                    "inference log: %d row(s) dropped (%s)", quiet=("buffer_full",))

    # -- writer ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._start_writer, name="mlops-inference-log", daemon=True)
            self._thread.start()

    def _start_writer(self) -> None:
        # The day partitions of the coming days are made before the first write, off the request
        # path, on a short connection of their own (not the writer's); a failure is only logged
        # (a day without a partition goes to the default one).
        from ..partitions import ensure_partitions_ahead

        ensure_partitions_ahead(self.settings)
        self._run()

    def _run(self) -> None:
        deadline = time.monotonic() + self.flush_seconds
        while True:
            with self._cond:
                now = time.monotonic()
                if not (self._stopping or self._flush_requested or self._batch_waiting(now)):
                    self._cond.wait(max(0.0, min(deadline - now, self.PREPARE_SECONDS)))
                if self._stopping:
                    return
                now = time.monotonic()
                due = self._flush_requested or now >= deadline or self._batch_waiting(now)
                if due:
                    self._flush_requested = False
            try:
                if due:
                    self._drain_once()
                    deadline = time.monotonic() + self.flush_seconds
                else:
                    with self._write_lock:
                        self._prepare_fresh()
                if self.metrics:
                    self.metrics.update_buffer(self.pending)
            except Exception:  # pragma: no cover - _write catches its own errors
                log.exception("inference log writer error")
                time.sleep(self.flush_seconds)

    def _batch_waiting(self, now: float) -> bool:
        """A full batch is buffered and no retry back-off holds it (caller holds _cond)."""
        return len(self._queue) >= self.BATCH_ROWS and now >= self._retry_at

    def _prepare_fresh(self) -> None:
        """Prepare the rows logged since the last call (caller holds _write_lock). Done every
        PREPARE_SECONDS rather than for a whole batch at flush time, so the CPU it takes is
        spread evenly instead of slowing every request for a moment once per flush."""
        with self._cond:
            fresh, self._fresh = self._fresh, []
        for i, r in enumerate(fresh):
            try:
                self._prepare(r)
            except Exception:  # left to _write, which isolates and counts rows it cannot write
                pass
            if i % 8 == 7:
                # Hand the GIL to the event loop between rows: without this the loop waits up
                # to the interpreter's switch interval (5 ms) at a time.
                time.sleep(0)

    def _drain_once(self) -> bool:
        """Write everything buffered now, in batches; False when a write failed (rows kept).

        Rows logged meanwhile wait for the next round: draining "until empty" under steady
        traffic turns into a stream of tiny COPYs and commits, each one taking the GIL back
        from the event loop several times (latency spikes for every request)."""
        with self._write_lock:
            self._prepare_fresh()
            with self._cond:
                goal = self._accepted  # rows are FIFO: done when _done reaches this
            while True:
                if not self._in_flight:
                    with self._cond:
                        n = min(len(self._queue), self.BATCH_ROWS, goal - self._done)
                        if n <= 0:
                            return True
                        self._in_flight = [self._queue.popleft() for _ in range(n)]
                now = time.monotonic()
                if now < self._retry_at:
                    return False
                if not self._write(self._in_flight):
                    return False
                with self._cond:
                    self._done += len(self._in_flight)
                    self._in_flight = []
                    self._cond.notify_all()

    def _prepare(self, row: dict) -> dict:
        if "_ready" in row:
            return row
        designation = _clean(row.get("designation"))
        description = _clean(row.get("description"))
        vocabulary, cleaned = row.get("vocabulary"), row.get("cleaned")
        if cleaned is not None:
            stats = textstats.clean_row_features(cleaned[0], cleaned[1], vocabulary)
        else:
            stats = textstats.row_features(designation, description, vocabulary)
        row.pop("vocabulary", None)  # only once the statistics are made: a failure keeps them
        row.pop("cleaned", None)
        row.update(stats, designation=designation, description=description,
                   designation_len=len(designation), description_len=len(description), _ready=True)
        row.setdefault("source", "api")
        row["_copy_line"] = store.inference_copy_line(row)
        return row

    def _write(self, rows: list[dict]) -> bool:
        """One attempt at writing `rows` (already taken from the queue). True when done with them."""
        try:
            for r in rows:
                self._prepare(r)  # prepared already, unless logged after the last _prepare_fresh
            conn = self._connection()
            store.lock_request_links(conn, shared=True)  # a label recorded meanwhile sees these rows
            store.insert_inference_rows(conn, rows)
            store.resolve_pending_feedback(conn, [r["request_id"] for r in rows])
            conn.commit()
        except Exception as exc:
            self._discard_connection()
            self.last_error = f"{type(exc).__name__}: {str(exc).strip()}"
            if self.metrics:
                self.metrics.log_write_errors.inc()
            if not write_is_transient(exc):
                log.error("inference log: the database refused a batch of %d rows (%s); "
                          "writing them one by one", len(rows), self.last_error)
                return self._write_one_by_one(rows)
            log.warning("inference log: write of %d rows failed (%s); %d rows kept, retry in %.1fs",
                        len(rows), self.last_error, self.pending, self._backoff)
            self._back_off()
            return False
        self._count_written(len(rows))
        self._backoff = self.backoff_initial
        self._retry_at = 0.0
        self.last_error = None
        return True

    def _write_one_by_one(self, rows: list[dict]) -> bool:
        """Isolate the rows the database refuses (dropped, counted); an outage midway keeps the
        rest in flight for the next attempt (False)."""
        bad = 0
        for i, r in enumerate(rows):
            try:
                self._prepare(r)
                conn = self._connection()
                store.lock_request_links(conn, shared=True)  # as a whole batch does
                store.insert_inference_rows(conn, [r])
                store.resolve_pending_feedback(conn, [r["request_id"]])
                conn.commit()
            except Exception as exc:
                self._discard_connection()
                if write_is_transient(exc):
                    with self._cond:
                        self._done += i
                        self._in_flight = rows[i:]
                    self._count_dropped("invalid", bad)
                    self._back_off()
                    return False
                bad += 1
                log.error("inference log: row %s dropped: %s", r.get("request_id"), exc)
                continue
            self._count_written(1)
        self._count_dropped("invalid", bad)
        return True

    def _connection(self):
        """The writer's connection, opened again after a failure closed it."""
        if self._conn is None or getattr(self._conn, "closed", 0):
            self._conn = self.connect()
        return self._conn

    def _back_off(self) -> None:
        """No write before the current backoff has passed; the next one waits twice as long."""
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self.backoff_max, self._backoff * 2)

    def _count_written(self, n: int) -> None:
        self.written += n
        if self.metrics:
            self.metrics.log_written.inc(n)

    def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.rollback()
            except Exception:
                pass
            try:
                conn.close()
            except Exception:
                pass

    # -- flush / close -----------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row buffered before this call is written (True), or `timeout`.

        With no writer thread, writes in the calling thread (retrying with backoff).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._accepted
        if self._thread is None or not self._thread.is_alive():
            while self._done < target and time.monotonic() < deadline:
                self._retry_at = min(self._retry_at, time.monotonic())
                if not self._drain_once():
                    time.sleep(max(0.0, min(self._backoff, deadline - time.monotonic())))
            return self._done >= target
        with self._cond:
            self._retry_at = 0.0  # a flush asks for an attempt now, not after the backoff
            self._flush_requested = True
            self._cond.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Drain (up to `timeout`), stop the writer, close the connection. True when nothing is lost."""
        ok = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(1.0, timeout))
            self._thread = None
        with self._write_lock:
            lost = self.pending
            if lost:
                log.error("inference log: %d row(s) not written at shutdown (%s)", lost, self.last_error)
                self._count_dropped("shutdown", lost)
                with self._cond:
                    self._queue.clear()
                    self._fresh = []
                    self._in_flight = []
            self._discard_connection()
        return ok and not lost

    def stats(self) -> dict:
        return {"pending": self.pending, "written": self.written, "dropped": dict(self.dropped),
                "capacity": self.capacity, "last_error": self.last_error}


def new_request_id() -> str:
    """32 hex digits, time-ordered like a UUIDv7 (milliseconds, then 80 random bits): the
    inference_log request_id index then grows at its right edge instead of touching a random
    page of a large index for every logged prediction."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


class Answers(list):
    """The answers to one request (serialized as a plain list), with their rows' `logged_at`:
    the shadow's rows take the same time, so a window selects the same requests in both tables."""

    logged_at: datetime


def log_predictions(inference_log: InferenceLogger, loaded: LoadedModel, items: Sequence[Any],
                    result: Predictions, *, request_id: str | None, single: bool, latency_ms: float,
                    metrics: ServingMetrics | None = None) -> Answers:
    """The answers to one prediction request, one per item (objects with designation,
    description, productid), and their inference_log rows, buffered (never blocks, never raises
    for the database). `request_id`: the client's id (a batch gets `<id>-<index>`), else new ones."""
    now = datetime.now(timezone.utc)
    version = loaded.version
    out, rows = Answers(), []
    out.logged_at = now
    for i, it in enumerate(items):
        if request_id is not None:
            rid = request_id if single else f"{request_id}-{i}"
        else:
            rid = new_request_id()
        code, conf = int(result.codes[i]), float(result.confidence[i])
        tk = [{"prdtypecode": int(c), "category": category_name(c), "probability": float(p)}
              for c, p in zip(result.top_codes[i], result.top_proba[i])]
        out.append({"prdtypecode": code, "category": category_name(code), "confidence": conf,
                    "top_k": tk, "model_version": version, "request_id": rid,
                    "productid": it.productid})
        rows.append({"logged_at": now, "request_id": rid, "source": "api", "model_version": version,
                     "productid": it.productid, "designation": it.designation,
                     "description": it.description or "", "predicted_code": code,
                     "confidence": conf, "top_k": tk, "latency_ms": latency_ms,
                     "vocabulary": loaded.vocabulary,
                     "cleaned": result.cleaned[i] if result.cleaned else None})
        if metrics is not None:
            metrics.observe_prediction(code, conf)
    inference_log.log_many(rows)
    return out
