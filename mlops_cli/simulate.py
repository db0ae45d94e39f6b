"""Simulated serving traffic: inference_log (and feedback) rows as the API would have written them.

Used by the drift tests, the drift benchmark and demos to exercise `mlops drift` / `mlops alert`
without a running API:

    n = simulate_traffic(conn, settings, model, "3", start=date(2026, 3, 1), days=7, per_day=500,
                         drift="vocabulary", seed=1, feedback_rate=0.5)
    conn.commit()                       # the caller owns the transaction

Products come from synth.generate_products (drift: none | vocabulary | length | classes), are
predicted as the API predicts (reference.served_probabilities: code = the model's predict,
confidence = the probability of that code, top_k = the 3 most probable classes as the API logs
them by default), get textstats.row_features with the model's own
vocabulary, and are written to inference_log with COPY, with source='simulation',
logged_at spread evenly over the days (a little jitter, never past the last day). A fraction
`feedback_rate` of them gets a feedback row carrying the true label, two hours later.

Large volumes: only `unique_rows` products (default at most 5,000) are generated and predicted;
the rows are replicas of them in random order, each template encoded once and written with
store.copy_repeated_inferences (COPY, 100k rows per statement). Distributions are those of the
unique sample, which is what a drift check sees anyway.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timezone

import numpy as np

from . import store, synth, textstats
from .config import Settings
from .performance_estimate import LOGGED_TOP_K, top_k_of
from .reference import served_probabilities

DEFAULT_UNIQUE = 5_000


def _start(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=timezone.utc)
    raise TypeError(f"start must be a date or datetime, got {type(value).__name__}")


def simulate_traffic(conn, settings: Settings, model, version, *, start, days: int, per_day: int,
                     drift: str = "none", seed: int = 0, feedback_rate: float = 0.0,
                     unique_rows: int | None = None, source: str = "simulation") -> int:
    """Insert days * per_day inference_log rows (and feedback for a fraction); returns the count.

    The caller commits. See the module docstring.
    """
    if drift not in synth.DRIFT_KINDS:
        raise ValueError(f"drift must be one of {synth.DRIFT_KINDS}, got {drift!r}")
    if days <= 0 or per_day <= 0:
        raise ValueError("days and per_day must be positive")
    if not 0.0 <= feedback_rate <= 1.0:
        raise ValueError("feedback_rate must be in [0, 1]")
    t0 = _start(start)
    total = int(days) * int(per_day)
    n_unique = max(1, min(total, int(unique_rows or DEFAULT_UNIQUE)))
    products = synth.generate_products(n_unique, seed=seed, drift=drift)
    codes, proba, classes = served_probabilities(model, products[["designation", "description"]])
    confidence, (top_codes, top_proba) = top_k_of(proba, classes, codes, LOGGED_TOP_K)
    top_codes, top_proba = top_codes.tolist(), top_proba.tolist()
    vocabulary = textstats.model_vocabulary(model)
    designation = products["designation"].tolist()
    description = products["description"].tolist()
    feats = [textstats.row_features(d, x, vocabulary) for d, x in zip(designation, description)]
    productid = products["productid"].astype(np.int64).tolist()
    true_code = products["prdtypecode"].astype(np.int64).tolist()
    codes = np.asarray(codes).astype(np.int64).tolist()
    confidence = np.asarray(confidence, dtype=float).tolist()

    rng = np.random.default_rng([int(seed), synth.DRIFT_KINDS.index(drift), 0x51A])
    idx = rng.permutation(np.arange(total) % n_unique)
    k = np.arange(total)
    offsets = ((k % per_day) + rng.random(total) * 0.999) / per_day * 86400.0 + (k // per_day) * 86400.0
    base = np.datetime64(t0.astimezone(timezone.utc).replace(tzinfo=None), "us")
    logged_at = np.datetime_as_string(base + (offsets * 1e6).astype("timedelta64[us]"), unit="us", timezone="UTC")
    token = uuid.uuid4().hex[:10]
    request_ids = [f"sim-{token}-{i}" for i in range(total)]
    version = None if version is None else str(version)
    templates = [{
        "source": source, "model_version": version, "productid": productid[j],
        "designation": designation[j], "description": description[j],
        "designation_len": len(designation[j]), "description_len": len(description[j]),
        "n_tokens": feats[j]["n_tokens"], "n_oov": feats[j]["n_oov"], "script": feats[j]["script"],
        "lang": feats[j]["lang"], "predicted_code": codes[j], "confidence": confidence[j],
        "top_k": [{"prdtypecode": c, "probability": p} for c, p in zip(top_codes[j], top_proba[j])],
    } for j in range(n_unique)]
    store.copy_repeated_inferences(conn, templates, idx.tolist(), logged_at.tolist(), request_ids)

    picked = np.flatnonzero(rng.random(total) < feedback_rate)
    for lo in range(0, len(picked), 50_000):
        part = picked[lo:lo + 50_000]
        store.insert_simulated_feedback(conn, [request_ids[i] for i in part],
                                        [true_code[int(idx[i])] for i in part])
    return total
