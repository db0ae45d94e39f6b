"""Prediction: what the API answers for a list of (designation, description) pairs.

The codes are what the model's own `predict` returns (the argmax of the decision function,
which is what `evaluate` scores); the confidence and top-k come from `predict_proba`, top-k
ordered by decision value (generic_predict: any fitted scikit-learn classifier pipeline).

For the pipeline `features.build_pipeline` makes, a FastPredictor does the same arithmetic with
the fitted vocabularies and coefficients directly, without scikit-learn's per-call validation
and joblib overhead (~0.3 ms instead of ~8 ms for one product). check_fast_path compares it with
the scikit-learn pipeline on probe texts (the holder does so at load time) and it is not used if
any probability differs by more than 1e-6. Models `mlops train` makes are calibrated
(calibration.TemperatureScaled around SGD, LinearSVC or logistic regression, one or two feature
blocks): the fast path applies the same (1 - eps) softmax(decision / T) + eps / K.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import textstats

log = logging.getLogger(__name__)


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
    """The items as the model's input frame. NUL and lone surrogates (a JSON `\\ud800` escape) are
    U+FFFD, as in the inference log: pandas' pyarrow strings refuse lone surrogates."""
    import pandas as pd

    from ..jsonvalues import storable

    return pd.DataFrame({"designation": [storable(d) for d, _ in items],
                         "description": [storable(x) if x is not None else "" for _, x in items]})


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
        from ..features import CharWbNgrams

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

        from .. import features
        from ..calibration import TemperatureScaled

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
        from ..features import clean_text

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
            from ..calibration import temperature_softmax

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

