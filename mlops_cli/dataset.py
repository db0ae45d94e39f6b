"""Datasets for training and evaluation, built from the `products` table.

The holdout is chosen by hashing productid: a product never moves between train and test as the
catalogue grows, so a champion and a challenger scored today are scored on the same rows, and
yesterday's holdout rows are still holdout rows today.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .errors import Conflict

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed integer hash (splitmix64 finaliser): stable across versions and machines."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def holdout_mask(productids, fraction: float) -> np.ndarray:
    """True for the products in the holdout (fraction of them, by hash of productid)."""
    h = _splitmix64(np.asarray(productids, dtype=np.int64))
    return (h % np.uint64(10_000)) < np.uint64(round(fraction * 10_000))


def split(df: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    mask = holdout_mask(df["productid"].to_numpy(), fraction)
    return df[~mask], df[mask]


def validation_mask(productids, fraction: float, holdout_fraction: float) -> np.ndarray:
    """True for the products of the validation part: `fraction` of the training products (those
    not in the holdout), by the same hash's upper bits, so it is as stable as the holdout as the
    catalogue grows and never overlaps it. Model selection and calibration use it."""
    h = _splitmix64(np.asarray(productids, dtype=np.int64))
    upper = (h >> np.uint64(32)) % np.uint64(10_000)  # independent of the low bits the holdout uses
    return ~holdout_mask(productids, holdout_fraction) & (upper < np.uint64(round(fraction * 10_000)))


def split_validation(train: pd.DataFrame, fraction: float, holdout_fraction: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(search part, validation part) of the training rows."""
    mask = validation_mask(train["productid"].to_numpy(), fraction, holdout_fraction)
    return train[~mask], train[mask]


# The rows whose code a human label gave (products.label_feedback_id set: a feedback row, or a
# catalogue row a label overrode or confirmed): 0 for the latest label, 1 for the one before...
# (store.label_recency), NaN for the catalogue's own codes. Without the column, no row is labelled.
LABEL_RANK = "label_rank"


def labelled_mask(df: pd.DataFrame) -> np.ndarray:
    if LABEL_RANK not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[LABEL_RANK].notna().to_numpy()


def kept_labels(df: pd.DataFrame, max_per_class: int | None) -> tuple[np.ndarray, dict[str, int]]:
    """(mask of the labelled rows the class cap must keep, {class: labelled rows it leaves out}).

    Every labelled row is kept: the training marks its label used (store.apply_feedback_labels),
    so the label must reach the fit. Only where a class's labelled rows alone exceed the cap are
    its latest max_per_class labels kept, the older ones left out (and counted)."""
    keep = labelled_mask(df).copy()
    left_out: dict[str, int] = {}
    if not max_per_class or not keep.any():
        return keep, left_out
    pos = np.flatnonzero(keep)
    codes = df["prdtypecode"].to_numpy()[pos]
    ranks = df[LABEL_RANK].to_numpy(dtype=float)[pos]
    for code in np.unique(codes):
        mine = pos[codes == code]
        if len(mine) > max_per_class:
            older = mine[np.argsort(ranks[codes == code], kind="stable")[max_per_class:]]
            keep[older] = False
            left_out[str(code)] = len(older)
    return keep, left_out


def balanced(df: pd.DataFrame, max_per_class: int | None, seed: int = 42, *, keep=None,
             caps: dict | None = None) -> pd.DataFrame:
    """At most max_per_class rows of each class (caps: {class: cap} for some classes instead);
    smaller classes kept whole. The rows of `keep` (a boolean mask: the human labels, see
    kept_labels) are always in, the rest of a class's cap a seeded sample of its other rows."""
    if not max_per_class:
        return df
    keep = np.zeros(len(df), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    parts = []
    for code, idx in sorted(df.groupby("prdtypecode", sort=True).indices.items()):
        cap = (caps or {}).get(code, max_per_class)
        group = df.iloc[idx]
        if len(group) <= cap:
            parts.append(group)
            continue
        must = keep[idx]
        if must.sum() > cap:
            raise ValueError(f"class {code}: {must.sum()} rows to keep, more than its cap {cap}")
        sample = group[~must].sample(n=cap - int(must.sum()), random_state=seed)
        parts.append(pd.concat([group[must], sample]) if must.any() else sample)
    return pd.concat(parts).sort_values("productid")


def dataset_hash(df: pd.DataFrame) -> str:
    """Identifies exactly which (productid, label) rows a model saw or was scored on (the train
    step records it of its training rows before the class cap, dataset_hash, and of the fit
    rows, fit_hash)."""
    h = hashlib.sha256()
    ids = df[["productid", "prdtypecode"]].sort_values("productid").to_numpy(dtype=np.int64)
    h.update(ids.tobytes())
    return h.hexdigest()[:16]


def check_trainable(train: pd.DataFrame, holdout: pd.DataFrame) -> None:
    """Refuse datasets no classifier can learn from, with a message that says why."""
    if len(train) == 0:
        raise Conflict("No products to train on: the catalogue is empty. Run `mlops load` first.")
    classes = train["prdtypecode"].unique()
    if len(classes) < 2:
        raise Conflict(
            f"Only one class ({classes[0]}) in the {len(train)} training rows: a classifier needs at "
            "least two. Load more of the catalogue first."
        )
    if len(holdout) == 0:
        raise Conflict(
            f"The holdout is empty ({len(train)} training rows): load more products before training."
        )


def label_distribution(df: pd.DataFrame) -> dict[str, int]:
    counts = df["prdtypecode"].value_counts().sort_index()
    return {str(k): int(v) for k, v in counts.items()}
