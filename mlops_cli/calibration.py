"""Calibrated probabilities for the linear classifiers, and how to measure calibration.

Temperature scaling with a noise floor: two scalars fitted on the validation part of the
training rows (log loss) turn a classifier's decision values into probabilities

    p = (1 - epsilon) * softmax(decision / T) + epsilon / K        (K classes)

T alone (plain temperature scaling) leaves the most confident predictions over-confident when
some labels are wrong -- real catalogues have mislabelled and ambiguous products (10 / 2705,
1280 / 1281) -- and the rest under-confident; epsilon is the share of rows no confidence
should ignore. Both maps are increasing and the same for every class, so no argmax changes:
predictions, scores and serving's fast path stay what they were. It works for every linear
family (LinearSVC has no probabilities of its own) and costs a division and a multiply-add.

scikit-learn 1.9 has CalibratedClassifierCV(method="temperature") for T alone, but its predict
is the argmax of the calibrated probabilities (not the classifier's own), and it hides the
decision function that serving's fast path and top-k use: hence this small wrapper.

A fitted model pickles a reference to this module (TemperatureScaled): keep the class here.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

ECE_BINS = 15


def temperature_softmax(decision, temperature: float, epsilon: float = 0.0) -> np.ndarray:
    """(1 - epsilon) softmax(decision / T) + epsilon / K, in double, row by row (binary decision
    values: logits (-d, d))."""
    z = np.asarray(decision, dtype=np.float64)
    if z.ndim == 1:
        z = np.column_stack([-z, z])
    z = z / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    if epsilon:
        z *= 1.0 - float(epsilon)
        z += float(epsilon) / z.shape[1]
    return z


def _targets(y, classes) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose label is one of classes, their column index)."""
    index = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    labels = np.asarray(y).tolist()
    rows = np.array([i for i, c in enumerate(labels) if c in index], dtype=np.intp)
    return rows, np.array([index[labels[i]] for i in rows.tolist()], dtype=np.intp)


def fit_calibration(decision, y, classes) -> tuple[float, float]:
    """(T, epsilon) minimising the log loss of the calibrated probabilities on held-out rows
    (rows whose label the classifier never saw are left out). T first alone (a bounded 1-D
    search on log T), then both together from there."""
    from scipy.optimize import minimize, minimize_scalar
    from scipy.special import logsumexp

    d = np.asarray(decision, dtype=np.float64)
    if d.ndim == 1:
        d = np.column_stack([-d, d])
    rows, target = _targets(y, classes)
    if rows.size == 0:
        return 1.0, 0.0
    d = d[rows]
    k = d.shape[1]
    at = np.arange(len(d))

    def log_softmax_true(log_t: float) -> np.ndarray:
        z = d / math.exp(log_t)
        return z[at, target] - logsumexp(z, axis=1)

    t_only = minimize_scalar(lambda lt: -float(np.mean(log_softmax_true(lt))), bounds=(-9.0, 7.0),
                             method="bounded", options={"xatol": 1e-5})

    def nll(x: np.ndarray) -> float:
        p = (1.0 - x[1]) * np.exp(log_softmax_true(x[0])) + x[1] / k
        return -float(np.mean(np.log(np.maximum(p, 1e-300))))

    both = minimize(nll, np.array([t_only.x, 0.01]), method="L-BFGS-B", bounds=[(-9.0, 7.0), (0.0, 0.5)])
    log_t, epsilon = (both.x if both.success and both.fun <= t_only.fun else (t_only.x, 0.0))
    return float(math.exp(log_t)), float(epsilon)


def calibration_metrics(proba, y, classes, bins: int = ECE_BINS) -> dict[str, float]:
    """Expected calibration error (top-label confidence vs accuracy, `bins` equal-width bins,
    weighted by rows) and the multi-class Brier score (mean squared error of the probability
    vector against the one-hot label, 0 best, 2 worst)."""
    p = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(y)
    classes = np.asarray(classes)
    confidence = p.max(axis=1)
    correct = classes[p.argmax(axis=1)] == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(float(correct[in_bin].mean()) - float(confidence[in_bin].mean()))
    onehot = (labels[:, None] == classes[None, :]).astype(np.float64)
    brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    return {"ece": float(ece), "brier": brier}


class TemperatureScaled(ClassifierMixin, BaseEstimator):
    """A linear classifier with calibrated probabilities:
    (1 - epsilon) softmax(decision_function / temperature) + epsilon / K.

    predict and decision_function are the classifier's own, so scores and top-k are unchanged;
    predict_proba is the confidence serving returns and the drift reference bins. `fit` refits
    the classifier and keeps the calibration (fitted apart, on validation rows).
    """

    def __init__(self, classifier=None, temperature: float = 1.0, epsilon: float = 0.0):
        self.classifier = classifier
        self.temperature = temperature
        self.epsilon = epsilon

    def fit(self, X, y):
        self.classifier.fit(X, y)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.classifier, "classes_")

    @property
    def classes_(self):
        return self.classifier.classes_

    def decision_function(self, X):
        return self.classifier.decision_function(X)

    def predict(self, X):
        return self.classifier.predict(X)

    def predict_proba(self, X):
        return temperature_softmax(self.classifier.decision_function(X), self.temperature, self.epsilon)
