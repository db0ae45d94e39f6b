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


def balanced(df: pd.DataFrame, max_per_class: int | None, seed: int = 42) -> pd.DataFrame:
    """At most max_per_class rows of each class (a seeded sample); smaller classes kept whole."""
    if not max_per_class:
        return df
    parts = []
    for _, group in df.groupby("prdtypecode", sort=True):
        parts.append(group.sample(n=max_per_class, random_state=seed) if len(group) > max_per_class else group)
    return pd.concat(parts).sort_values("productid")


def dataset_hash(df: pd.DataFrame) -> str:
    """Identifies exactly which (productid, label) rows a model saw or was scored on."""
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
