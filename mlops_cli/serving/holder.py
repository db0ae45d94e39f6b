"""The model being served: the version behind the `champion` alias, hot-swapped.

ModelHolder loads the version behind an alias (`champion` for the API; `challenger` for the
shadow scorer, serving/shadow.py, the same way), then polls the registry every
MODEL_POLL_SECONDS. When the alias moves (promotion, rollback) the new version is loaded and
warmed up completely first (LoadedModel.prepare), then one reference is swapped: a request reads
that reference once, so requests in flight finish on the model they started with and none fails.
A failed reload keeps the old model (logged, counted). No champion: not ready (the API answers 503).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .. import registry, textstats
from ..config import Settings
from .metrics import ServingMetrics
from .predictor import PROBES, FastPredictor, Predictions, check_fast_path, generic_predict

log = logging.getLogger(__name__)

# The longest pause before loading again a version whose load failed (the pause doubles from
# MODEL_POLL_SECONDS); another version, once the alias moves, is loaded at the next poll.
RETRY_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to serve: the model, how to predict with it, and its vocabulary."""

    version: str
    model: Any
    mlflow_run_id: str | None
    vocabulary: set[str] | None
    fast: FastPredictor | None
    loaded_at: float = field(default_factory=time.time)

    def predict(self, items: Sequence[tuple[str, str | None]], top_k: int = 3) -> Predictions:
        if self.fast is not None:
            return self.fast.predict(items, top_k)
        return generic_predict(self.model, items, top_k)

    @classmethod
    def prepare(cls, version: str, model, mlflow_run_id: str | None = None, *, fast: bool = True) -> "LoadedModel":
        """Build predictor and vocabulary, check the fast path, warm up: all before serving."""
        predictor = FastPredictor.build(model) if fast else None
        if predictor is not None and not check_fast_path(model, predictor):
            predictor = None
        loaded = cls(str(version), model, mlflow_run_id, textstats.model_vocabulary(model), predictor)
        loaded.predict(list(PROBES[:2]), 3)  # warm-up, and a last check that it predicts at all
        return loaded


def check_servable(settings: Settings, version: str) -> None:
    """Load `version` and prepare it as the API does before serving it (raises what the API's
    load would meet): for a person about to put it in production (rollback)."""
    LoadedModel.prepare(str(version), registry.load_model(settings, version=version))


class ModelHolder:
    """The model behind an alias (default the champion), reloaded in the background when the
    alias moves. `metrics` are the served model's: only the champion's holder reports to them."""

    def __init__(self, settings: Settings, *, metrics: ServingMetrics | None = None,
                 loader: Callable[[Settings, str], Any] | None = None,
                 resolver: Callable[[Settings, str], dict | None] | None = None,
                 alias: str = registry.CHAMPION, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.alias = alias
        self.metrics = metrics if alias == registry.CHAMPION else None
        self._load = loader or (lambda s, v: registry.load_model(s, version=v))
        self._resolve = resolver or registry.version_by_alias
        self._clock = clock  # monotonic seconds: when a failed version may be tried again
        self._current: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self.reloads = 0
        self.failures = 0
        # A version that failed to load is tried again after a growing pause, not at every poll:
        # each try downloads and unpickles the model. (version, monotonic time of the next try, pause)
        self._failed: tuple[str, float, float] | None = None
        self.alias_version: str | None = None  # where the alias pointed at the last read
        self.alias_readable = True             # whether the last read of the alias worked

    @property
    def current(self) -> LoadedModel | None:
        """The model to use for one request: read it once, use it for the whole request."""
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def load_failed(self) -> bool:
        """The alias points at a version whose last load failed (until it loads or the alias
        moves; a retry in progress does not clear it)."""
        failed = self._failed
        return failed is not None and failed[0] == self.alias_version

    @property
    def retry_pause(self) -> float | None:
        """Seconds between the last failed load and the next try of that version (None: no failure)."""
        failed = self._failed
        return failed[2] if failed is not None else None

    def refresh(self) -> bool:
        """Check the alias once; load and swap when it moved. True when the served model changed.

        Never raises for registry or load problems: they are logged, counted and kept in
        `last_error`, and the current model (if any) keeps serving.
        """
        with self._refresh_lock:
            self.last_check = time.time()
            try:
                target = self._resolve(self.settings, self.alias)
            except Exception as exc:
                self.alias_readable = False
                self.last_error = f"cannot read the {self.alias} alias: {exc}"
                log.warning("%s; still serving %s", self.last_error,
                            self._current.version if self._current else "nothing")
                if self.metrics:
                    self.metrics.poll_errors.inc()
                return False
            self.alias_readable = True
            self.alias_version = str(target["version"]) if target is not None else None
            current = self._current
            if target is None:
                self.last_error = None
                if current is not None:
                    # a challenger alias goes away when it is decided on: no cause for alarm
                    log.log(logging.WARNING if self.alias == registry.CHAMPION else logging.INFO,
                            "the %s alias of %s is gone: no longer %s version %s", self.alias,
                            self.settings.model_name, self._doing, current.version)
                    self._current = None
                    if self.metrics:
                        self.metrics.set_model(self.settings.model_name, None)
                    return True
                return False
            version = str(target["version"])
            if current is not None and current.version == version:
                self.last_error = None  # read again, and on what is served: an old error is over
                return False
            failed = self._failed
            if failed is not None and failed[0] == version and self._clock() < failed[1]:
                return False  # last_error still says why
            t0 = time.perf_counter()
            try:
                model = self._load(self.settings, version)
                loaded = LoadedModel.prepare(version, model, target.get("mlflow_run_id"))
            except Exception as exc:
                self.failures += 1
                self.last_error = f"cannot load version {version}: {exc}"
                pause = min(RETRY_MAX_SECONDS, 2 * failed[2]) if failed and failed[0] == version else \
                    max(0.05, float(self.settings.model_poll_seconds))
                self._failed = (version, self._clock() + pause, pause)
                held = f"; still serving {current.version if current else 'nothing'}" \
                    if self.alias == registry.CHAMPION else ""
                log.error("model reload failed: %s%s; next try in %.0f s", self.last_error, held, pause)
                if self.metrics:
                    self.metrics.reloads.labels("failure").inc()
                return False
            self._current = loaded  # the swap: one reference assignment
            self._failed = None
            self.reloads += 1
            self.last_error = None
            if self.metrics:
                self.metrics.reloads.labels("success").inc()
                self.metrics.set_model(self.settings.model_name, loaded)
            log.info("%s %s version %s (was %s; loaded in %.1fs, %s path)", self._doing, self.settings.model_name,
                     version, current.version if current else "none", time.perf_counter() - t0,
                     "fast" if loaded.fast else "scikit-learn")
            return True

    @property
    def _doing(self) -> str:
        return "serving" if self.alias == registry.CHAMPION else f"shadowing ({self.alias})"

    def start(self, background: bool = True) -> None:
        """Load the alias's version now (not ready if there is none), then poll in a daemon thread."""
        self.refresh()
        if self.metrics and self._current is None:
            self.metrics.set_model(self.settings.model_name, None)
        if background and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"mlops-model-poll-{self.alias}", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Check the alias now instead of at the next poll (after a rollback through the API)."""
        self._wake.set()

    def _run(self) -> None:
        interval = max(0.05, float(self.settings.model_poll_seconds))
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.refresh()
            except Exception:  # pragma: no cover - refresh catches its own errors
                log.exception("model poll failed")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

