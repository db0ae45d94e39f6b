"""The serving runtime behind the API: the champion model, its hot swap, and the inference log.

ModelHolder
    Loads the version behind the `champion` alias, then polls the registry every
    MODEL_POLL_SECONDS. When the alias moves (promotion, rollback) the new version is loaded and
    warmed up completely first, then one reference is swapped: a request reads that reference
    once, so requests in flight finish on the model they started with and none fails. A failed
    reload keeps the old model (logged, counted). No champion: not ready (the API answers 503).

LoadedModel.predict
    The codes are what the model's own `predict` returns (the argmax of the decision function,
    which is what `evaluate` scores); the confidence and top-k come from `predict_proba`, top-k
    ordered by decision value. For the pipeline `features.build_pipeline` makes, a FastPredictor
    does the same arithmetic with the fitted vocabularies and coefficients directly, without
    scikit-learn's per-call validation and joblib overhead (~0.3 ms instead of ~8 ms for one
    product). It is checked against the scikit-learn pipeline on probe texts at load time and
    not used if any probability differs by more than 1e-6. Models `mlops train` makes are
    calibrated (calibration.TemperatureScaled around SGD, LinearSVC or logistic regression, one
    or two feature blocks): the fast path applies the same (1 - eps) softmax(decision / T) + eps / K.

InferenceLogger
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

import glob
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import registry, store, textstats
from .categories import category_name
from .config import Settings

log = logging.getLogger(__name__)


# --- metrics ---------------------------------------------------------------------------------------
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
                                ["model_name", "version", "run_id"], registry=r, multiprocess_mode="livemax")
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
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for reason in ("buffer_full", "invalid", "shutdown"):
            self.log_dropped.labels(reason)
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

    def set_model(self, model_name: str, loaded: "LoadedModel | None") -> None:
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
        self._info_labels = (model_name, loaded.version, loaded.run_id or "")
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


# --- prediction ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """Per input row: code, confidence, top-k codes and probabilities (Python lists: what the
    API serializes); and, when the predictor made them, the (title, description) after
    features.clean_text, which the inference log reuses for its text statistics."""

    codes: list[int]
    confidence: list[float]
    top_codes: list[list[int]]
    top_proba: list[list[float]]
    cleaned: list[tuple[str, str]] | None = None


def _rank(classes: np.ndarray, proba: np.ndarray, decision: np.ndarray | None, top_k: int,
          cleaned: list[tuple[str, str]] | None = None) -> Predictions:
    """Top-k by decision value (stable: first class wins a tie, as argmax in `predict` does)."""
    key = decision if decision is not None and decision.ndim == 2 else proba
    order = np.argsort(-key, axis=1, kind="stable")[:, :top_k]
    top_p = np.take_along_axis(proba, order, axis=1)
    return Predictions(classes[order[:, 0]].tolist(), top_p[:, 0].tolist(), classes[order].tolist(),
                       top_p.tolist(), cleaned)


def _rows_frame(items: Sequence[tuple[str, str | None]]):
    import pandas as pd

    return pd.DataFrame({"designation": [d for d, _ in items],
                         "description": [x if x is not None else "" for _, x in items]})


def generic_predict(model, items: Sequence[tuple[str, str | None]], top_k: int) -> Predictions:
    """Any fitted scikit-learn classifier pipeline: features once, then decision and probabilities."""
    X = _rows_frame(items)
    clf, Xt = model, X
    if hasattr(model, "steps") and len(model.steps) > 1:
        clf, Xt = model.steps[-1][1], model[:-1].transform(X)
    proba = np.asarray(clf.predict_proba(Xt))
    decision = None
    if hasattr(clf, "decision_function"):
        decision = np.asarray(clf.decision_function(Xt))
    return _rank(np.asarray(clf.classes_), proba, decision, top_k)


class _Block:
    """One fitted TfidfVectorizer's vocabulary and weighting, its columns starting at `offset` in
    the feature union's output.

    `collect` appends the global columns of a document's in-vocabulary features (repeated as
    often as they occur), the multiset scikit-learn's analyzer gives, at less cost for one
    document: word n-grams are built from the tokenizer's tokens with unigrams looked up
    directly; char_wb n-grams never cross a word, so each word's columns are cached (bounded).
    Any other analyzer is called as it is.
    """

    WORD_CACHE = 100_000

    def __init__(self, vec, column: str, offset: int):
        self.column = column
        self.offset = offset
        vocab = vec.vocabulary_
        # Global column numbers (offset added), as Python ints: one dict lookup per feature.
        self.vocab = {k: int(v) + offset for k, v in vocab.items()}
        self.n_features = len(vocab)
        self.dtype = np.dtype(vec.dtype)
        self.binary = bool(vec.binary)
        self.sublinear = bool(vec.sublinear_tf)
        self.idf = np.asarray(vec.idf_, dtype=self.dtype) if vec.use_idf else np.ones(len(vocab), self.dtype)
        self.norm = vec.norm
        if self.norm not in ("l2", None):
            raise TypeError(f"unsupported norm {self.norm!r}")
        self.analyze = vec.build_analyzer()
        self.min_n, self.max_n = vec.ngram_range
        from .features import CharWbNgrams

        plain = vec.input == "content" and not callable(vec.analyzer)
        if plain and vec.analyzer == "word" and vec.stop_words is None:
            self.kind = "word"
            self.preprocess, self.tokenize = vec.build_preprocessor(), vec.build_tokenizer()
        elif (plain and vec.analyzer == "char_wb") or (vec.input == "content" and
                                                      isinstance(vec.analyzer, CharWbNgrams)):
            self.kind = "char_wb"
            self.preprocess = vec.build_preprocessor() if plain else str.lower
            self._words: dict[str, tuple[int, ...]] = {}
        else:
            self.kind = "other"

    def collect(self, doc: str, cols: list[int]) -> None:
        get = self.vocab.get
        if self.kind == "word":
            tokens = self.tokenize(self.preprocess(doc))
            if self.min_n == 1:
                cols += [j for j in map(get, tokens) if j is not None]
            join = " ".join
            for n in range(max(2, self.min_n), min(self.max_n, len(tokens)) + 1):
                grams = map(join, zip(*(tokens[k:] for k in range(n))))  # n consecutive tokens
                cols += [j for j in map(get, grams) if j is not None]
        elif self.kind == "char_wb":
            words = self._words
            for w in self.preprocess(doc).split():
                hit = words.get(w)
                if hit is None:
                    hit = tuple([j for j in map(get, self.analyze(w)) if j is not None])
                    if len(words) >= self.WORD_CACHE:
                        words.clear()
                    words[w] = hit
                cols += hit
        else:
            cols += [j for j in map(get, self.analyze(doc)) if j is not None]


class FastPredictor:
    """The arithmetic of the features.build_pipeline model, straight from its fitted parts.

    Per document, the feature union's row is built as one sorted array of global columns (the
    blocks in union order, each block's columns sorted as scikit-learn's CSR rows are), with a
    handful of numpy calls for the whole row: the per-call cost, not the arithmetic, is what
    matters for one product. The arithmetic is scikit-learn's, in the same order and precision:
    float32 1 + log(tf) times idf, the L2 norm of each block accumulated sequentially in double
    (sparsefuncs_fast), then the products with the coefficients summed sequentially in the
    common dtype of features and coefficients, as scipy's csr_matvecs does. So the decision
    values are the pipeline's, bit for bit (checked against it at load time).

    `build(model)` returns None for any other shape of model (the generic path is used then).
    """

    def __init__(self, model):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression, SGDClassifier
        from sklearn.svm import LinearSVC

        from . import features
        from .calibration import TemperatureScaled

        steps = model.named_steps
        prep, union, clf = steps["prepare"], steps["features"], steps["classifier"]
        if list(steps) != ["prepare", "features", "classifier"] or prep.func is not features.prepare:
            raise TypeError("not a features.build_pipeline model")
        kw = dict(prep.kw_args or {})
        self.fold_accents = bool(kw.get("fold_accents", False))
        self.description_chars = int(kw.get("description_chars", 2000))
        if union.transformer_weights or not union.transformer_list:
            raise TypeError("unexpected feature union")
        columns = {features.pick_text: "text", features.pick_title: "title"}
        self.blocks: list[_Block] = []
        offset = 0
        for _name, sub in union.transformer_list:
            pick, vec = sub.steps[0][1], sub.steps[-1][1]
            if len(sub.steps) != 2 or pick.func not in columns or not isinstance(vec, TfidfVectorizer):
                raise TypeError("unexpected feature branch")
            block = _Block(vec, columns[pick.func], offset)
            self.blocks.append(block)
            offset += block.n_features
        b0 = self.blocks[0]
        if any((b.dtype, b.binary, b.sublinear, b.norm) != (b0.dtype, b0.binary, b0.sublinear, b0.norm)
               for b in self.blocks):
            raise TypeError("feature blocks weighted differently")
        self.feature_dtype, self.binary, self.sublinear, self.norm = b0.dtype, b0.binary, b0.sublinear, b0.norm
        self.idf = np.concatenate([b.idf for b in self.blocks])
        self.block_ends = np.array([b.offset + b.n_features for b in self.blocks], dtype=np.intp)
        self.classes = np.asarray(clf.classes_)
        self.class_list = self.classes.tolist()
        if len(self.classes) < 3:
            raise TypeError("binary model")
        self.temperature, self.epsilon = 1.0, 0.0
        if isinstance(clf, TemperatureScaled):  # calibrated: softmax(decision / T), any linear family
            self.kind, self.temperature = "temperature", float(clf.temperature)
            self.epsilon = float(clf.epsilon or 0.0)
            clf = clf.classifier
            if not isinstance(clf, (SGDClassifier, LinearSVC, LogisticRegression)) or not self.temperature > 0:
                raise TypeError(f"unsupported calibrated classifier {type(clf).__name__}")
        elif isinstance(clf, SGDClassifier) and clf.loss == "modified_huber":
            self.kind = "modified_huber"
        elif isinstance(clf, LogisticRegression):
            self.kind = "softmax"
        else:
            raise TypeError(f"unsupported classifier {type(clf).__name__}")
        # X (the vectorizers' dtype) @ coef_.T is computed in their common dtype: float32 when
        # SGD was fitted on float32 TF-IDF. Same dtype, same order of operations, same result.
        self.dtype = np.result_type(self.feature_dtype, np.asarray(clf.coef_).dtype)
        self.weights = np.ascontiguousarray(np.asarray(clf.coef_, dtype=self.dtype).T)
        if self.weights.shape[0] != offset:
            raise TypeError("feature count does not match the coefficients")
        self.intercept = np.asarray(clf.intercept_)

    @classmethod
    def build(cls, model) -> "FastPredictor | None":
        try:
            return cls(model)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            log.info("fast prediction path not available for this model (%s); using scikit-learn", exc)
            return None

    def _decision(self, docs: dict[str, str]) -> np.ndarray | None:
        """Decision values of one document (None when no feature is in the vocabularies)."""
        cols: list[int] = []
        for block in self.blocks:
            block.collect(docs[block.column], cols)
        if not cols:
            return None
        # Sorted distinct global columns and their counts (np.unique's result, in fewer calls):
        # the union's CSR row, blocks in order, columns sorted in each.
        a = np.array(cols, dtype=np.intp)
        a.sort()
        edge = np.empty(len(a) + 1, dtype=bool)
        edge[0] = edge[-1] = True
        np.not_equal(a[1:], a[:-1], out=edge[1:-1])
        pos = np.flatnonzero(edge)
        idx = a[pos[:-1]]
        data = np.diff(pos).astype(self.feature_dtype)
        if self.binary:
            data.fill(1)
        if self.sublinear:
            np.log(data, out=data)
            data += 1.0
        data *= self.idf.take(idx)
        if self.norm == "l2":
            squares = (data * data).astype(np.float64)  # float32 products, summed in double
            start = 0
            for end in np.searchsorted(idx, self.block_ends).tolist():
                if end > start:
                    total = float(np.cumsum(squares[start:end])[-1])  # sequential, as scikit-learn
                    if total != 0.0:  # divided in double, stored in the features' dtype
                        data[start:end] = data[start:end] / np.float64(math.sqrt(total))
                start = end
        products = data.astype(self.dtype, copy=False)[:, None] * self.weights.take(idx, axis=0)
        return np.add.reduce(products, axis=0)  # row after row from the first: csr_matvecs' order

    def _one(self, designation: str, description: str | None, top_k: int) -> Predictions:
        """One product, ranked in plain Python: for 27 classes, numpy's per-call cost is most of
        the work. The decision values are the same; probabilities are computed in double (as
        scikit-learn's when the model's intercept is double, within 1e-7 otherwise)."""
        pair, docs = self._clean(designation, description)
        row = self._decision(docs)
        decision = (self.intercept if row is None else row + self.intercept).tolist()
        n = len(decision)
        if self.kind == "modified_huber":
            prob = [(min(max(d, -1.0), 1.0) + 1.0) / 2.0 for d in decision]
            total = sum(prob)
            prob = [p / total for p in prob] if total != 0 else [1.0 / n] * n
        else:  # softmax of decision / T (T = 1: logistic regression's own)
            t = self.temperature
            scaled = [d / t for d in decision]
            top = max(scaled)
            prob = [math.exp(z - top) for z in scaled]
            total = sum(prob)
            prob = [p / total for p in prob]
            if self.epsilon:  # as calibration.temperature_softmax: the noise floor
                keep, floor = 1.0 - self.epsilon, self.epsilon / n
                prob = [p * keep + floor for p in prob]
        order = sorted(range(n), key=decision.__getitem__, reverse=True)[:top_k]  # stable
        codes = self.class_list
        return Predictions([codes[order[0]]], [prob[order[0]]], [[codes[i] for i in order]],
                           [[prob[i] for i in order]], [pair])

    def _clean(self, designation: str, description: str | None) -> tuple[tuple[str, str], dict[str, str]]:
        """((title, description) through clean_text, the documents each feature block reads)."""
        from .features import clean_text

        t, d = clean_text(designation), clean_text(description)
        cleaned = (t, d)
        if self.fold_accents:  # from the raw text again: cleaning is not idempotent (&lt;)
            t, d = clean_text(designation, True), clean_text(description, True)
        d = d[: self.description_chars]
        return cleaned, {"title": t, "text": f"{t} {d}".strip()}

    def scores(self, items: Sequence[tuple[str, str | None]], cleaned: list | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, decision values) for (designation, description) pairs. `cleaned`, a
        list, receives each (title, description) through clean_text (accents as they are)."""
        decision = np.zeros((len(items), len(self.classes)), dtype=self.dtype)
        for i, (designation, description) in enumerate(items):
            pair, docs = self._clean(designation, description)
            if cleaned is not None:
                cleaned.append(pair)
            row = self._decision(docs)
            if row is not None:
                decision[i] = row
        decision = decision + self.intercept  # as decision_function: dtype may widen here
        if self.kind == "modified_huber":  # as SGDClassifier.predict_proba
            prob = np.clip(decision, -1, 1)
            prob += 1.0
            prob /= 2.0
            prob_sum = prob.sum(axis=1)
            all_zero = prob_sum == 0
            if np.any(all_zero):
                prob[all_zero, :] = 1
                prob_sum[all_zero] = len(self.classes)
            prob /= prob_sum.reshape((prob.shape[0], -1))
        elif self.kind == "temperature":  # as calibration.TemperatureScaled.predict_proba
            from .calibration import temperature_softmax

            prob = temperature_softmax(decision, self.temperature, self.epsilon)
        else:
            e = np.exp(decision - decision.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
        return prob, decision

    def predict(self, items: Sequence[tuple[str, str | None]], top_k: int) -> Predictions:
        if len(items) == 1:
            return self._one(items[0][0], items[0][1], top_k)
        cleaned: list[tuple[str, str]] = []
        proba, decision = self.scores(items, cleaned)
        return _rank(self.classes, proba, decision, top_k, cleaned)


PROBES: tuple[tuple[str, str | None], ...] = (
    ("Harry Potter à l'école des sorciers - Tome 1", "Roman jeunesse, <b>livré</b> en bon &eacute;tat"),
    ("Console PS4 Slim 500 Go + manette", None),
    ("Piscine tubulaire 3x2m avec pompe", ""),
    ("Figurine One Piece ルフィ 18cm", "フィギュア 新品"),
    ("Lot de 3 magazines anciens N° 69", "Ã©tat correct, â€™ traces d'usage"),
    ("x", None),
    ("!!!", "???"),
)


def _probe_items(model) -> list[tuple[str, str | None]]:
    items = list(PROBES)
    vocab = textstats.model_vocabulary(model)
    if vocab:
        words = sorted(vocab)[:: max(1, len(vocab) // 60)][:60]
        for i in range(0, len(words), 6):
            items.append((" ".join(words[i:i + 3]), " ".join(words[i + 3:i + 6])))
    return items


def check_fast_path(model, fast: FastPredictor) -> bool:
    """True when the fast path gives the pipeline's probabilities (1e-6) and predictions, for a
    batch and for each product alone (the two are computed differently)."""
    items = _probe_items(model)
    X = _rows_frame(items)
    try:
        expected_p = model.predict_proba(X)
        expected_codes = np.asarray(model.predict(X)).tolist()
        got_p, _ = fast.scores(items)
        got = fast.predict(items, 1)
        classes = fast.class_list
        singles = [fast.predict([it], len(classes)) for it in items]
        one_p = np.array([[dict(zip(r.top_codes[0], r.top_proba[0]))[c] for c in classes] for r in singles])
    except Exception as exc:  # pragma: no cover - a model we do not understand
        log.warning("fast prediction path check failed (%s); using scikit-learn", exc)
        return False
    worst = max(float(np.abs(p - expected_p).max()) if p.shape == expected_p.shape else math.inf
                for p in (got_p, one_p))
    if worst > 1e-6 or got.codes != expected_codes or [r.codes[0] for r in singles] != expected_codes:
        log.warning("fast prediction path disagrees with the model (max diff %.2g); using scikit-learn", worst)
        return False
    return True


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to serve: the model, how to predict with it, and its vocabulary."""

    version: str
    model: Any
    run_id: str | None
    vocabulary: set[str] | None
    fast: FastPredictor | None
    loaded_at: float = field(default_factory=time.time)

    def predict(self, items: Sequence[tuple[str, str | None]], top_k: int = 3) -> Predictions:
        if self.fast is not None:
            return self.fast.predict(items, top_k)
        return generic_predict(self.model, items, top_k)

    @classmethod
    def prepare(cls, version: str, model, run_id: str | None = None, *, fast: bool = True) -> "LoadedModel":
        """Build predictor and vocabulary, check the fast path, warm up: all before serving."""
        predictor = FastPredictor.build(model) if fast else None
        if predictor is not None and not check_fast_path(model, predictor):
            predictor = None
        loaded = cls(str(version), model, run_id, textstats.model_vocabulary(model), predictor)
        loaded.predict(list(PROBES[:2]), 3)  # warm-up, and a last check that it predicts at all
        return loaded


# --- the champion, hot-swapped -------------------------------------------------------------------
class ModelHolder:
    """The model behind the champion alias, reloaded in the background when the alias moves."""

    def __init__(self, settings: Settings, *, metrics: ServingMetrics | None = None,
                 loader: Callable[[Settings, str], Any] | None = None,
                 resolver: Callable[[Settings, str], dict | None] | None = None):
        self.settings = settings
        self.metrics = metrics
        self._load = loader or (lambda s, v: registry.load_model(s, version=v))
        self._resolve = resolver or registry.version_by_alias
        self._current: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self.reloads = 0
        self.failures = 0

    @property
    def current(self) -> LoadedModel | None:
        """The model to use for one request: read it once, use it for the whole request."""
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def refresh(self) -> bool:
        """Check the alias once; load and swap when it moved. True when the served model changed.

        Never raises for registry or load problems: they are logged, counted and kept in
        `last_error`, and the current model (if any) keeps serving.
        """
        with self._refresh_lock:
            self.last_check = time.time()
            try:
                target = self._resolve(self.settings, registry.CHAMPION)
            except Exception as exc:
                self.last_error = f"cannot read the champion alias: {exc}"
                log.warning("%s; still serving %s", self.last_error,
                            self._current.version if self._current else "nothing")
                if self.metrics:
                    self.metrics.poll_errors.inc()
                return False
            current = self._current
            if target is None:
                self.last_error = None
                if current is not None:
                    log.warning("the champion alias of %s is gone: no longer serving version %s",
                                self.settings.model_name, current.version)
                    self._current = None
                    if self.metrics:
                        self.metrics.set_model(self.settings.model_name, None)
                    return True
                return False
            version = str(target["version"])
            if current is not None and current.version == version:
                return False
            t0 = time.perf_counter()
            try:
                model = self._load(self.settings, version)
                loaded = LoadedModel.prepare(version, model, target.get("run_id"))
            except Exception as exc:
                self.failures += 1
                self.last_error = f"cannot load version {version}: {exc}"
                log.error("model reload failed: %s; still serving %s", self.last_error,
                          current.version if current else "nothing")
                if self.metrics:
                    self.metrics.reloads.labels("failure").inc()
                return False
            self._current = loaded  # the swap: one reference assignment
            self.reloads += 1
            self.last_error = None
            if self.metrics:
                self.metrics.reloads.labels("success").inc()
                self.metrics.set_model(self.settings.model_name, loaded)
            log.info("serving %s version %s (was %s; loaded in %.1fs, %s path)", self.settings.model_name,
                     version, current.version if current else "none", time.perf_counter() - t0,
                     "fast" if loaded.fast else "scikit-learn")
            return True

    def start(self, background: bool = True) -> None:
        """Load the champion now (not ready if there is none), then poll in a daemon thread."""
        self.refresh()
        if self.metrics and self._current is None:
            self.metrics.set_model(self.settings.model_name, None)
        if background and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mlops-model-poll", daemon=True)
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


# --- the inference log ---------------------------------------------------------------------------
def _transient(exc: BaseException) -> bool:
    """A database outage (retry the same rows) rather than rows the database refuses."""
    import psycopg2

    from .errors import TransientError

    if isinstance(exc, (TransientError, psycopg2.OperationalError, psycopg2.InterfaceError, OSError)):
        return True
    if isinstance(exc, psycopg2.Error):
        code = getattr(exc, "pgcode", None) or ""
        # 08 connection, 53 resources, 57 operator intervention (shutdown), 40 rollbacks, 42P01
        # undefined table (migrations not applied yet): all worth retrying.
        return code[:2] in ("08", "53", "57", "40") or code == "42P01" or not code
    return False


def _clean(text: Any) -> str:
    s = "" if text is None else str(text)
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON "\ud800" escapes
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


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
        from . import db

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
        with self._cond:
            if len(self._queue) + len(self._in_flight) >= self.capacity:
                self._count_dropped("buffer_full", 1)
                return False
            self._queue.append(row)
            self._fresh.append(row)
            self._accepted += 1
            if len(self._queue) >= self.BATCH_ROWS:
                self._cond.notify_all()
        return True

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
        if n <= 0:
            return
        first = self.dropped[reason] == 0
        self.dropped[reason] += n
        if self.metrics:
            self.metrics.log_dropped.labels(reason).inc(n)
        if first or reason != "buffer_full":
            log.warning("inference log: %d row(s) dropped (%s)", n, reason)

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
        from .steps.retention import ensure_partitions_ahead

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
            if self._conn is None or getattr(self._conn, "closed", 0):
                self._conn = self.connect()
            conn = self._conn
            store.insert_inference_rows(conn, rows)
            store.resolve_pending_feedback(conn, [r["request_id"] for r in rows])
            conn.commit()
        except Exception as exc:
            self._discard_connection()
            self.last_error = f"{type(exc).__name__}: {str(exc).strip()}"
            if self.metrics:
                self.metrics.log_write_errors.inc()
            if not _transient(exc):
                log.error("inference log: the database refused a batch of %d rows (%s); "
                          "writing them one by one", len(rows), self.last_error)
                return self._write_one_by_one(rows)
            log.warning("inference log: write of %d rows failed (%s); %d rows kept, retry in %.1fs",
                        len(rows), self.last_error, self.pending, self._backoff)
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self.backoff_max, self._backoff * 2)
            return False
        self.written += len(rows)
        if self.metrics:
            self.metrics.log_written.inc(len(rows))
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
                if self._conn is None or getattr(self._conn, "closed", 0):
                    self._conn = self.connect()
                store.insert_inference_rows(self._conn, [r])
                self._conn.commit()
            except Exception as exc:
                self._discard_connection()
                if _transient(exc):
                    with self._cond:
                        self._done += i
                        self._in_flight = rows[i:]
                    self._count_dropped("invalid", bad)
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self.backoff_max, self._backoff * 2)
                    return False
                bad += 1
                log.error("inference log: row %s dropped: %s", r.get("request_id"), exc)
                continue
            self.written += 1
            if self.metrics:
                self.metrics.log_written.inc()
        self._count_dropped("invalid", bad)
        return True

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
