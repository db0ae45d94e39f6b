"""Pure drift statistics for the product-classification monitoring stack.

Everything here is a pure function of numpy arrays (or plain sequences):
no I/O, no logging, no global state. Only numpy and scipy are used.

Design rule: drift *scores* are effect sizes, p-values are supporting evidence
------------------------------------------------------------------------------
The score that drives alerting is an effect size -- the Population Stability
Index (:func:`psi`, :func:`rate_shift`) -- read on one scale where

    > 0.1  WARNING      > 0.2  ALERT      > 0.3  CRITICAL    (:func:`drift_level`)

Hypothesis tests (:func:`chi_square`; the drift scores add a binned KS,
drift_scoring.py) answer a different
question ("could these two samples come from exactly the same distribution?")
and their p-values depend as much on sample size as on the size of the change:

* on large samples (10^5 rows and more) they flag trivial shifts -- a 0.02
  standard-deviation change in a feature is "highly significant" yet
  operationally irrelevant;
* on tiny samples (a 100-row hourly window) they miss real shifts.

So p-values are reported next to the score but never used as the score.

Small windows bias PSI upwards
------------------------------
Even when nothing has changed, sampling noise makes raw PSI positive: its
expected value is approximately ``(K - 1) * (1/n_ref + 1/n_cur)`` for ``K``
occupied bins. Over the 27 product classes with ~100 rows per window raw PSI
typically reads 0.2-0.4 (well past the CRITICAL threshold) on data drawn from
the very same distribution as the reference. :func:`psi` therefore subtracts
that expected noise by default (``correct=True``). The correction removes the
*bias*, not the *variance*: with 27 classes and 100-row windows the corrected
PSI still has a standard deviation of roughly 0.07, so a few percent of
unchanged windows will still read above 0.1. Use bigger windows (or a
persistence rule over consecutive windows) when that matters.

Fixed bins
----------
Numeric features are binned with edges computed *once* from the training
reference (:func:`fixed_bins`) and stored as JSON (:func:`edges_to_json` /
:func:`edges_from_json`), so every monitoring window is compared on exactly the
same bins. Categorical features (class labels, tokens) are counted over a fixed
category list (:func:`category_counts`).

All result types are frozen dataclasses with an ``as_dict()`` that returns
JSON-serialisable plain Python floats, ints and lists.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np
from scipy import stats as _sps

from .vocab import Level, values

__all__ = [
    "PSIResult",
    "ChiResult",
    "fixed_bins",
    "edges_to_json",
    "edges_from_json",
    "histogram",
    "category_counts",
    "psi",
    "psi_noise",
    "top_contributors",
    "chi_square",
    "rate_shift",
    "drift_level",
    "DRIFT_LEVELS",
]

#: Ordered drift levels returned by :func:`drift_level`.
DRIFT_LEVELS: tuple[str, ...] = values(Level)


# --------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    """Convert numpy scalars / arrays / tuples to plain JSON-friendly Python."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


def _count_total(x: float) -> int | float:
    """Total of a count vector: an ``int`` when integral, else a ``float``."""
    xf = float(x)
    return int(xf) if xf.is_integer() else xf


@dataclass(frozen=True)
class PSIResult:
    """Population Stability Index result (see :func:`psi`).

    ``value`` is the score to alert on (bias-corrected unless ``correct=False``),
    ``raw`` the uncorrected PSI, ``expected_noise`` the subtracted term
    ``(k - 1) * (1/n_ref + 1/n_cur)``, ``k`` the number of occupied bins and
    ``contributions`` the per-bin raw PSI terms (same length and order as the
    input counts; they sum to ``raw`` and are all >= 0).
    """

    value: float
    raw: float
    expected_noise: float
    n_ref: int | float
    n_cur: int | float
    k: int
    contributions: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable plain-Python dict of the fields."""
        return {
            "value": float(self.value),
            "raw": float(self.raw),
            "expected_noise": float(self.expected_noise),
            "n_ref": _plain(self.n_ref),
            "n_cur": _plain(self.n_cur),
            "k": int(self.k),
            "contributions": [float(c) for c in self.contributions],
        }


@dataclass(frozen=True)
class ChiResult:
    """Chi-square test of homogeneity result (see :func:`chi_square`)."""

    statistic: float
    pvalue: float
    dof: int
    cramers_v: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable plain-Python dict of the fields."""
        return {
            "statistic": float(self.statistic),
            "pvalue": float(self.pvalue),
            "dof": int(self.dof),
            "cramers_v": float(self.cramers_v),
        }


# --------------------------------------------------------------------------
# Input validation helpers
# --------------------------------------------------------------------------
def _sample(values: Any, name: str, *, finite_only: bool = False) -> np.ndarray:
    """1-D float array with NaN (or all non-finite) values dropped; never empty."""
    arr = np.asarray(values, dtype=float).ravel()
    n_in = arr.size
    arr = arr[np.isfinite(arr)] if finite_only else arr[~np.isnan(arr)]
    if arr.size == 0:
        what = "non-finite" if finite_only else "NaN"
        raise ValueError(
            f"{name} is empty: {n_in} value(s) given, none left after dropping "
            f"{what} values"
        )
    return arr


def _counts(counts: Any, name: str) -> np.ndarray:
    """1-D float array of finite, non-negative counts."""
    arr = np.asarray(counts, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector of counts, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: no bins/categories given")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite counts")
    if np.any(arr < 0):
        raise ValueError(f"{name} contains negative counts")
    return arr


def _count_pair(ref_counts: Any, cur_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate two aligned count vectors with positive totals."""
    ref = _counts(ref_counts, "ref_counts")
    cur = _counts(cur_counts, "cur_counts")
    if ref.shape != cur.shape:
        raise ValueError(
            f"ref_counts and cur_counts must have the same number of bins, "
            f"got {ref.size} and {cur.size}"
        )
    if ref.sum() <= 0:
        raise ValueError("ref_counts is empty: total count is 0")
    if cur.sum() <= 0:
        raise ValueError("cur_counts is empty: total count is 0")
    return ref, cur


# --------------------------------------------------------------------------
# Hypothesis tests (supporting evidence only)
# --------------------------------------------------------------------------
def chi_square(ref_counts: Any, cur_counts: Any) -> ChiResult:
    """Chi-square test of homogeneity between two categorical count vectors.

    Builds the 2 x K contingency table (reference row, current row), drops
    categories that are empty in both, and runs
    ``scipy.stats.chi2_contingency`` without Yates' continuity correction (so
    ``statistic`` is the plain Pearson statistic). ``cramers_v`` =
    ``sqrt(statistic / N)`` (N = grand total; min(rows, cols) - 1 = 1 for two
    rows) is reported as an effect size in [0, 1]. With fewer than two
    occupied categories the distributions cannot differ: statistic 0,
    p-value 1, dof 0, V 0.

    When it misleads: like every p-value it flags trivial differences on big
    samples and misses real ones on small samples; the chi-square
    approximation is poor when expected cell counts are below ~5 (typical for
    rare classes in small windows). Cramér's V is itself biased upwards on
    small samples (roughly by ``sqrt((K-1)/N)``), and it is dominated by the
    larger of the two samples, so do not alert on it; alert on :func:`psi`.
    """
    ref, cur = _count_pair(ref_counts, cur_counts)
    keep = (ref + cur) > 0
    table = np.vstack([ref[keep], cur[keep]])
    if table.shape[1] < 2:
        return ChiResult(statistic=0.0, pvalue=1.0, dof=0, cramers_v=0.0)
    res = _sps.chi2_contingency(table, correction=False)
    statistic = float(res.statistic)
    n_total = float(table.sum())
    cramers_v = math.sqrt(max(statistic, 0.0) / n_total) if n_total > 0 else 0.0
    return ChiResult(
        statistic=statistic,
        pvalue=float(res.pvalue),
        dof=int(res.dof),
        cramers_v=min(cramers_v, 1.0),
    )


# --------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------
def fixed_bins(reference: Any, n_bins: int = 10) -> np.ndarray:
    """Bin edges from reference quantiles, open-ended at both sides.

    Returns ``[-inf, q_1, ..., q_{n_bins-1}, +inf]`` where ``q_i`` are the
    ``i / n_bins`` quantiles of the (finite values of the) reference,
    deduplicated. Bins are left-closed ``[e_i, e_{i+1})`` in
    :func:`histogram`; because the outer edges are infinite, current values
    below/above the reference range fall into the first/last bin. Compute
    once at training time and store with :func:`edges_to_json`.

    When it misleads: on discrete or zero-inflated features many quantiles
    coincide and are deduplicated, so you get fewer (and unequal-mass) bins
    than asked for -- a constant reference gives just two bins ``[-inf, c)``
    and ``[c, +inf)``. Mass moving *within* a bin is invisible, and mass
    moving far beyond the reference range registers no more than mass moving
    just past it (both land in the outer bin): a binned score does not measure
    how far mass moved.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    ref = _sample(reference, "reference", finite_only=True)
    qs = np.linspace(0.0, 1.0, int(n_bins) + 1)[1:-1]
    inner = np.unique(np.quantile(ref, qs)) if qs.size else np.empty(0)
    inner = _off_mass_points(inner, np.unique(ref))
    return np.concatenate(([-np.inf], inner, [np.inf])).astype(float)


def _off_mass_points(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Move each edge that equals a reference value halfway down to the next smaller value.

    A quantile edge sitting exactly on a value the reference takes (a mass point: 1/27 for a
    uniform probability row, 0 for an empty description) makes the bin of that value depend on the
    last bit of floating-point arithmetic: the same confidence computed by another code path
    (serving vs training, Python vs SQL) can fall on either side. Midpoints keep every reference
    value, and anything within rounding of it, in the same bin.
    """
    if edges.size == 0 or values.size == 0:
        return edges
    pos = np.searchsorted(values, edges)
    on_value = (pos < values.size) & (values[np.minimum(pos, values.size - 1)] == edges)
    below = np.where(pos > 0, values[np.maximum(pos - 1, 0)], edges - 1.0)
    moved = np.where(on_value, (below + edges) / 2.0, edges)
    return np.unique(moved)


def _check_edges(edges: np.ndarray) -> np.ndarray:
    edges = np.asarray(edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError("edges must be a 1-D array with at least 2 values")
    if np.any(np.isnan(edges)):
        raise ValueError("edges must not contain NaN")
    if np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be strictly increasing")
    return edges


def edges_to_json(edges: Any) -> list:
    """Bin edges as a strict-JSON list: infinities become ``"-inf"`` / ``"inf"``.

    Finite edges become plain Python floats. Standard JSON has no infinity
    (``json.dumps`` would emit the non-standard ``Infinity``), hence the
    strings. Inverse: :func:`edges_from_json`.

    When it misleads: it does not; floats round-trip exactly through JSON
    (``repr`` precision), so stored edges reproduce the training bins bit for
    bit.
    """
    arr = _check_edges(np.asarray(edges, dtype=float))
    out: list = []
    for e in arr.tolist():
        if math.isinf(e):
            out.append("inf" if e > 0 else "-inf")
        else:
            out.append(float(e))
    return out


_INF_STRINGS = {
    "inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
    "-inf": -math.inf, "-infinity": -math.inf,
}


def edges_from_json(values: Sequence[Any]) -> np.ndarray:
    """Inverse of :func:`edges_to_json`: a float array with infinities restored.

    Accepts ``"inf"``/``"-inf"`` (also ``"Infinity"``/``"-Infinity"``, any
    case), real float infinities, and ``None`` as the first/last element
    (meaning ``-inf``/``+inf``, as some serialisers write it). Validates that
    the result is strictly increasing.

    When it misleads: ``None`` anywhere other than the two ends is rejected
    rather than guessed.
    """
    vals = list(values)
    out: list[float] = []
    last = len(vals) - 1
    for i, v in enumerate(vals):
        if v is None:
            if i == 0:
                out.append(-math.inf)
            elif i == last:
                out.append(math.inf)
            else:
                raise ValueError(f"edges_from_json: None at position {i} (only allowed at the ends)")
        elif isinstance(v, str):
            key = v.strip().lower()
            if key in _INF_STRINGS:
                out.append(_INF_STRINGS[key])
            else:
                try:
                    out.append(float(key))
                except ValueError:
                    raise ValueError(f"edges_from_json: cannot parse edge {v!r}") from None
        else:
            out.append(float(v))
    return _check_edges(np.asarray(out, dtype=float))


def histogram(values: Any, edges: Any) -> np.ndarray:
    """Counts of ``values`` in the fixed bins ``edges`` (int64 array, len(edges)-1).

    Bins are left-closed ``[e_i, e_{i+1})``; values below ``edges[0]`` or at /
    above ``edges[-1]`` are put in the first / last bin (with the open-ended
    edges of :func:`fixed_bins` this is just the natural assignment). NaNs
    are dropped (track missingness separately, e.g. with :func:`rate_shift`).
    An empty input gives all-zero counts (it is :func:`psi` that rejects an
    empty window). Vectorised (``searchsorted`` + ``bincount``).

    When it misleads: the counts are only comparable across windows if the
    *same* edges are used -- never recompute edges on the current window.
    """
    e = _check_edges(np.asarray(edges, dtype=float))
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    n_bins = e.size - 1
    idx = np.searchsorted(e, arr, side="right") - 1
    np.clip(idx, 0, n_bins - 1, out=idx)
    return np.bincount(idx, minlength=n_bins).astype(np.int64)


def category_counts(
    values: Any, categories: Sequence[Hashable], *, include_other: bool = False
) -> np.ndarray:
    """Counts of ``values`` over a fixed, ordered ``categories`` list.

    Returns an int64 array aligned with ``categories``; values not in the list
    are dropped, or counted in one extra trailing "other" slot when
    ``include_other=True`` (length ``len(categories) + 1``). Matching is by
    equality/hash, so ``10`` and ``"10"`` are different categories. Counting
    is done once per distinct value (``np.unique`` / ``Counter``), not per
    row in Python. An empty input gives all-zero counts.

    When it misleads: with ``include_other=False`` unseen categories (a new
    product class, a new token) vanish silently and the remaining shares are
    renormalised -- use ``include_other=True`` when novelty matters.
    """
    cats = list(categories)
    if not cats:
        raise ValueError("categories is empty: need a fixed, non-empty category list")
    index: dict[Hashable, int] = {}
    for i, c in enumerate(cats):
        if c in index:
            raise ValueError(f"categories contains a duplicate: {c!r}")
        index[c] = i
    out = np.zeros(len(cats) + (1 if include_other else 0), dtype=np.int64)

    arr = np.asarray(values).ravel()
    if arr.size == 0:
        return out
    uniq: Sequence[Any]
    cnts: Sequence[int]
    if arr.dtype.kind in "US" and not isinstance(values, np.ndarray):
        # a plain sequence coerced to strings may have mixed types ([10, "x"] ->
        # ["10", "x"]): count the original objects instead.
        counter = Counter(list(values))
        uniq, cnts = list(counter.keys()), list(counter.values())
    elif arr.dtype.kind in "biufUSM":
        u, c = np.unique(arr, return_counts=True)
        uniq, cnts = u.tolist(), c.tolist()
    else:  # object / mixed types: np.unique would need a total order
        counter = Counter(arr.tolist())
        uniq, cnts = list(counter.keys()), list(counter.values())
    for u, c in zip(uniq, cnts):
        j = index.get(u)
        if j is None and isinstance(u, float) and u.is_integer():
            j = index.get(int(u))  # float labels (e.g. from a NaN-holding column)
        if j is not None:
            out[j] += c
        elif include_other:
            out[-1] += c
    return out


# --------------------------------------------------------------------------
# Effect sizes (the drift scores)
# --------------------------------------------------------------------------
def psi_noise(k: int, n_ref: float, n_cur: float) -> float:
    """Expected raw PSI under *no change*: ``(k - 1) * (1/n_ref + 1/n_cur)``.

    First-order (chi-square) approximation for ``k`` occupied bins: the
    per-bin sampling variance of ``p_cur - p_ref`` is ``p(1-p)(1/n_ref +
    1/n_cur)``, and summing ``(p_cur - p_ref)^2 / p`` over bins gives the
    formula.

    When it misleads: it is a mean, not an upper bound -- roughly half of
    unchanged windows still sit above it -- and it is only approximate when
    many bins have expected counts near zero.
    """
    if n_ref <= 0 or n_cur <= 0:
        raise ValueError("n_ref and n_cur must be positive")
    return max(int(k) - 1, 0) * (1.0 / float(n_ref) + 1.0 / float(n_cur))


def psi(
    ref_counts: Any,
    cur_counts: Any,
    *,
    correct: bool = True,
    eps: float = 1e-4,
) -> PSIResult:
    """Population Stability Index between two count vectors over fixed bins.

    ``raw = sum_i (p_cur_i - p_ref_i) * ln(p_cur_i / p_ref_i)`` with
    ``p = counts / total`` -- a symmetric KL (Jeffreys) divergence, >= 0. A
    bin empty on one side would make the log infinite, so its share is
    replaced by ``max(eps, 0.5 / n)`` for that side (``n`` = that side's
    total): ``eps`` for large samples, a half-count continuity correction for
    small ones. (A fixed ``1e-4`` floor on a 100-row window turns each rare
    class that happens to be absent into a 0.05-0.2 PSI term and defeats the
    bias correction below.) Bins empty on both sides are ignored (contribution
    0, not counted in ``k``).

    Small-sample bias correction (``correct=True``, default): under no change
    raw PSI has expected value ``≈ (K-1)(1/n_ref + 1/n_cur)``, with ``K`` the
    number of bins with non-zero reference or current mass (see
    :func:`psi_noise`). ``value = max(0, raw - (K-1)(1/n_ref + 1/n_cur))``.
    Example: raw PSI over the 27 classes with ~100 rows per window reads
    0.2-0.4 when *nothing* changed; the correction (~0.26 there) brings it
    back near 0. With ``correct=False``, ``value == raw``.

    ``contributions`` holds the per-bin raw terms (aligned with the input,
    summing to ``raw``) to rank the top drifting classes / tokens / bins
    (:func:`top_contributors`).

    Thresholds (:func:`drift_level`): 0.1 warning, 0.2 alert, 0.3 critical.
    For a normal feature a location shift of ``d`` standard deviations gives
    PSI ≈ ``d**2`` (for fine bins), i.e. 0.1 ≈ a 0.3-sd shift.

    When it misleads: the correction removes bias, not variance -- with 27
    bins and 100 rows the corrected value still fluctuates by about ±0.07,
    so isolated warnings on small windows are expected. PSI depends on the
    binning (coarser bins hide changes, many sparse bins inflate noise), is
    dominated by bins whose share goes to or from ~0, and says nothing about
    direction; inspect ``contributions``.
    """
    if not (isinstance(eps, (int, float, np.floating)) and 0 < float(eps) < 1):
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    ref, cur = _count_pair(ref_counts, cur_counts)
    n_ref = float(ref.sum())
    n_cur = float(cur.sum())
    occupied = (ref + cur) > 0
    k = int(occupied.sum())

    p_ref = ref / n_ref
    p_cur = cur / n_cur
    p_ref = np.where(p_ref > 0, p_ref, max(float(eps), 0.5 / n_ref))
    p_cur = np.where(p_cur > 0, p_cur, max(float(eps), 0.5 / n_cur))
    terms = (p_cur - p_ref) * np.log(p_cur / p_ref)
    terms = np.where(occupied, np.maximum(terms, 0.0), 0.0)

    raw = float(terms.sum())
    noise = psi_noise(k, n_ref, n_cur)
    value = max(0.0, raw - noise) if correct else raw
    return PSIResult(
        value=value,
        raw=raw,
        expected_noise=noise,
        n_ref=_count_total(n_ref),
        n_cur=_count_total(n_cur),
        k=k,
        contributions=tuple(float(t) for t in terms),
    )


def top_contributors(
    result: PSIResult, labels: Sequence[Any], n: int = 5
) -> list[tuple[Any, float]]:
    """The ``n`` bins/categories with the largest PSI contribution.

    Returns ``[(label, contribution), ...]`` sorted by decreasing
    contribution, skipping zero contributions. ``labels`` must align with the
    counts given to :func:`psi` (e.g. the category list, plus "other").

    When it misleads: contributions are raw (uncorrected) terms, so on small
    windows every bin carries some noise, roughly ``(1 - p)/n`` each; rare
    bins absent from a small window rank high by chance.
    """
    contrib = np.asarray(result.contributions, dtype=float)
    if len(labels) != contrib.size:
        raise ValueError(
            f"labels has {len(labels)} entries but the PSI result has {contrib.size} bins"
        )
    order = np.argsort(-contrib, kind="stable")[: max(int(n), 0)]
    return [(labels[i], float(contrib[i])) for i in order if contrib[i] > 0]


def rate_shift(
    ref_rate: float,
    ref_n: float,
    cur_rate: float,
    cur_n: float,
    *,
    correct: bool = True,
    eps: float = 1e-4,
) -> float:
    """PSI of a rate (e.g. empty-description rate, OOV rate, missing rate).

    Treats the rate as a 2-bin yes/no distribution with ``ref_n`` and
    ``cur_n`` rows and returns :func:`psi` on the implied counts
    ``[rate * n, (1 - rate) * n]``, with the same small-sample correction
    (K = 2, i.e. ``1/ref_n + 1/cur_n``; K = 1 if both rates are 0 or both 1).
    Same scale as PSI: 0.1 / 0.2 / 0.3. Symmetric when ``ref_n == cur_n``.

    When it misleads: PSI is relative within each bin, so near 0 (or 1) a
    small absolute change scores like a large one elsewhere (on large
    samples: 1% -> 5% ≈ 0.066, 0.1% -> 2% ≈ 0.057, but 50% -> 60% ≈ 0.041 and
    1% -> 3% only ≈ 0.022). A 2-bin PSI rarely reaches 0.1 unless the rate
    moves a lot (20% -> 35% ≈ 0.12); pick rate thresholds accordingly. If
    ``ref_n``/``cur_n`` are not the row counts the rates were measured on,
    the correction is wrong.
    """
    for name, r in (("ref_rate", ref_rate), ("cur_rate", cur_rate)):
        if r is None or not (0.0 <= float(r) <= 1.0):
            raise ValueError(f"{name} must be in [0, 1], got {r!r}")
    for name, n in (("ref_n", ref_n), ("cur_n", cur_n)):
        if n is None or not (float(n) > 0) or math.isinf(float(n)):
            raise ValueError(f"{name} must be a positive, finite row count, got {n!r} (empty window?)")
    rr, cr = float(ref_rate), float(cur_rate)
    rn, cn = float(ref_n), float(cur_n)
    res = psi([rr * rn, (1.0 - rr) * rn], [cr * cn, (1.0 - cr) * cn], correct=correct, eps=eps)
    return res.value


def drift_level(
    score: float | None,
    warning: float = 0.1,
    alert: float = 0.2,
    critical: float = 0.3,
) -> str:
    """Map an effect-size score to ``"NONE"``, ``"WARNING"``, ``"ALERT"`` or ``"CRITICAL"``.

    Strictly greater than a threshold reaches that level (exactly 0.1 is
    ``"NONE"``, 0.1000001 is ``"WARNING"``). ``None`` or NaN gives
    ``"NONE"``; ``+inf`` gives ``"CRITICAL"``.

    When it misleads: meant for effect sizes (PSI, JS distance, rate_shift),
    not for p-values (where *small* means drift) nor for sd-normalised
    Wasserstein distances, which live on a different scale. A missing score
    reads as NONE -- report "no data" separately if that matters.
    """
    if not (warning <= alert <= critical):
        raise ValueError(
            f"thresholds must satisfy warning <= alert <= critical, got {warning}, {alert}, {critical}"
        )
    if score is None:
        return "NONE"
    s = float(score)
    if math.isnan(s):
        return "NONE"
    if s > critical:
        return "CRITICAL"
    if s > alert:
        return "ALERT"
    if s > warning:
        return "WARNING"
    return "NONE"
