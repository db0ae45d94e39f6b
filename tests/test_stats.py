"""Tests for mlops_cli.stats: pure drift statistics (no database, no I/O)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlops_cli import stats
from mlops_cli.stats import (
    ChiResult,
    PSIResult,
    category_counts,
    chi_square,
    drift_level,
    edges_from_json,
    edges_to_json,
    fixed_bins,
    histogram,
    psi,
    rate_shift,
    top_contributors,
)

# Approximate class frequencies of the Rakuten France training set (27 product
# type codes, 84,916 rows): largest class ~12%, smallest ~0.9%.
RAKUTEN_COUNTS = np.array(
    [10209, 5073, 5045, 4993, 4989, 4870, 4774, 4760, 4303, 3953, 3241, 3116,
     2761, 2671, 2589, 2508, 2496, 2491, 2070, 1681, 1421, 872, 832, 824, 807,
     803, 764],
    dtype=float,
)
P_RAKUTEN = RAKUTEN_COUNTS / RAKUTEN_COUNTS.sum()
K_CLASSES = 27
N_REFERENCE = 50_000


def _raw_psi(ref, cur):
    """Textbook PSI in plain Python (no empty bins allowed)."""
    n_ref, n_cur = sum(ref), sum(cur)
    total = 0.0
    for r, c in zip(ref, cur):
        pr, pc = r / n_ref, c / n_cur
        total += (pc - pr) * math.log(pc / pr)
    return total


# --------------------------------------------------------------------------
# PSI: hand-computed cases
# --------------------------------------------------------------------------
def test_psi_small_window_correction_hand_computed():
    ref = [50, 30, 20]  # n_ref = 100 -> shares 0.5, 0.3, 0.2
    cur = [4, 3, 3]     # n_cur = 10  -> shares 0.4, 0.3, 0.3
    expected_raw = (
        (0.4 - 0.5) * math.log(0.4 / 0.5)    # 0.1 * ln(1.25) = 0.0223144
        + (0.3 - 0.3) * math.log(0.3 / 0.3)  # 0
        + (0.3 - 0.2) * math.log(0.3 / 0.2)  # 0.1 * ln(1.5)  = 0.0405465
    )
    assert expected_raw == pytest.approx(0.0628609, abs=1e-7)
    expected_noise = (3 - 1) * (1 / 100 + 1 / 10)  # = 0.22
    assert expected_noise == pytest.approx(0.22)

    res = psi(ref, cur)
    assert isinstance(res, PSIResult)
    assert res.raw == pytest.approx(expected_raw)
    assert res.expected_noise == pytest.approx(expected_noise)
    # raw (0.063) is below what pure noise produces on 10 rows (0.22): no drift.
    assert res.value == 0.0
    assert res.k == 3 and res.n_ref == 100 and res.n_cur == 10
    assert sum(res.contributions) == pytest.approx(res.raw)
    assert res.contributions[1] == 0.0

    uncorrected = psi(ref, cur, correct=False)
    assert uncorrected.value == pytest.approx(expected_raw)
    assert uncorrected.raw == pytest.approx(expected_raw)


def test_psi_correction_subtracts_noise_when_shift_is_real():
    ref = [500, 300, 200]  # n_ref = 1000 -> 0.5, 0.3, 0.2
    cur = [10, 10, 30]     # n_cur = 50   -> 0.2, 0.2, 0.6
    expected_raw = (
        (0.2 - 0.5) * math.log(0.2 / 0.5)    # 0.3 * ln(2.5) = 0.2748872
        + (0.2 - 0.3) * math.log(0.2 / 0.3)  # 0.1 * ln(1.5) = 0.0405465
        + (0.6 - 0.2) * math.log(0.6 / 0.2)  # 0.4 * ln(3)   = 0.4394449
    )
    expected_noise = (3 - 1) * (1 / 1000 + 1 / 50)  # = 0.042
    res = psi(ref, cur)
    assert res.raw == pytest.approx(expected_raw)
    assert res.raw == pytest.approx(0.7548786, abs=1e-6)
    assert res.expected_noise == pytest.approx(0.042)
    assert res.value == pytest.approx(expected_raw - expected_noise)
    assert res.raw == pytest.approx(_raw_psi(ref, cur))
    # Class 3 (0.2 -> 0.6) is the top contributor, class 2 the smallest.
    assert top_contributors(res, ["a", "b", "c"], n=2) == [
        ("c", pytest.approx(0.4 * math.log(3))),
        ("a", pytest.approx(0.3 * math.log(2.5))),
    ]


def test_psi_empty_bins_smoothing_and_k():
    # Bin 3 is empty in the reference; bin 4 is empty on both sides.
    ref = [60, 40, 0, 0]   # n_ref = 100
    cur = [5, 3, 2, 0]     # n_cur = 10
    res = psi(ref, cur)
    assert res.k == 3  # the all-zero bin is not counted
    assert res.contributions[3] == 0.0
    floor_ref = max(1e-4, 0.5 / 100)  # half-count floor for the empty reference bin
    expected_raw = (
        (0.5 - 0.6) * math.log(0.5 / 0.6)
        + (0.3 - 0.4) * math.log(0.3 / 0.4)
        + (0.2 - floor_ref) * math.log(0.2 / floor_ref)
    )
    assert res.raw == pytest.approx(expected_raw)
    assert res.expected_noise == pytest.approx(2 * (1 / 100 + 1 / 10))
    assert math.isfinite(res.value) and res.value > 0

    # On large samples the floor is eps.
    big = psi([600_000, 400_000, 0], [500_000, 300_000, 200_000])
    assert big.contributions[2] == pytest.approx((0.2 - 1e-4) * math.log(0.2 / 1e-4))
    assert psi([600_000, 400_000, 0], [500_000, 300_000, 200_000], eps=1e-3).raw < big.raw


def test_psi_identical_counts_is_zero_and_as_dict_is_json():
    res = psi([10, 20, 30], [10, 20, 30])
    assert res.raw == 0.0 and res.value == 0.0
    d = res.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"value", "raw", "expected_noise", "n_ref", "n_cur", "k", "contributions"}
    assert isinstance(d["contributions"], list)
    assert all(type(c) is float for c in d["contributions"])
    assert type(d["n_ref"]) is int and type(d["k"]) is int
    with pytest.raises(Exception):
        res.value = 1.0  # frozen


# --------------------------------------------------------------------------
# PSI: no false alarms, and real shifts are caught
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_no_false_alarm_on_same_distribution_small_windows(seed):
    rng = np.random.default_rng(seed)
    ref = rng.multinomial(N_REFERENCE, P_RAKUTEN)
    windows = rng.multinomial(100, P_RAKUTEN, size=200)
    results = [psi(ref, w) for w in windows]
    corrected = np.array([r.value for r in results])
    raw = np.array([r.raw for r in results])

    # Without the correction a 100-row window of unchanged data is almost
    # always above the 0.1 WARNING threshold (typically 0.15-0.4)...
    assert np.mean(raw > 0.1) > 0.9
    assert np.median(raw) > 0.2
    # ...with it, unchanged windows read near 0. The correction removes the
    # bias, not the variance (sd ~0.07 with 27 classes / 100 rows), so a few
    # percent of windows may still graze WARNING; never ALERT-level typically.
    assert np.median(corrected) < 0.05
    assert np.mean(corrected > 0.1) < 0.10
    assert np.mean(corrected > 0.2) < 0.02
    # Expected noise formula matches the mean raw PSI under no change.
    assert np.mean(raw) == pytest.approx(results[0].expected_noise, rel=0.2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_no_false_alarm_on_same_distribution_large_windows(seed):
    rng = np.random.default_rng(100 + seed)
    ref = rng.multinomial(N_REFERENCE, P_RAKUTEN)
    for w in rng.multinomial(100_000, P_RAKUTEN, size=5):
        res = psi(ref, w)
        assert res.value < 0.1
        assert res.raw < 0.01
        assert drift_level(res.value) == "NONE"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_false_alarm_dirichlet_imbalance(seed):
    rng = np.random.default_rng(1000 + seed)
    p = rng.dirichlet(np.full(K_CLASSES, 2.0))
    ref = rng.multinomial(N_REFERENCE, p)
    corrected = np.array([psi(ref, w).value for w in rng.multinomial(100, p, size=200)])
    assert np.median(corrected) < 0.05
    assert np.mean(corrected > 0.1) < 0.12
    for w in rng.multinomial(100_000, p, size=3):
        assert psi(ref, w).value < 0.1


def _shifted_distribution():
    """Half of the mass moved onto three mid-sized classes."""
    q = 0.5 * P_RAKUTEN.copy()
    q[[10, 11, 12]] += 0.5 / 3
    return q


@pytest.mark.parametrize("n_cur", [200, 100_000])
def test_real_shift_is_critical(n_cur):
    q = _shifted_distribution()
    rng = np.random.default_rng(7)
    ref = rng.multinomial(N_REFERENCE, P_RAKUTEN)
    for w in rng.multinomial(n_cur, q, size=20):
        res = psi(ref, w)
        assert res.value > 0.3
        assert drift_level(res.value) == "CRITICAL"
        labels = list(range(K_CLASSES))
        top3 = {label for label, _ in top_contributors(res, labels, n=3)}
        assert top3 & {10, 11, 12}


# --------------------------------------------------------------------------
# p-values are not effect sizes
# --------------------------------------------------------------------------
def test_p_value_flags_trivial_shift_on_large_samples_but_effect_size_is_tiny():
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, 100_000)
    current = rng.normal(0.02, 1.0, 100_000)  # a 0.02-sd shift: operationally nothing

    edges = fixed_bins(reference, 10)
    h_ref, h_cur = histogram(reference, edges), histogram(current, edges)
    chi = chi_square(h_ref, h_cur)
    assert chi.pvalue < 0.05           # "statistically significant"...
    assert chi.cramers_v < 0.02        # ...for a negligible association
    p = psi(h_ref, h_cur)
    assert p.value < 0.01              # far below the 0.1 WARNING threshold
    assert drift_level(p.value) == "NONE"


# --------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------
def test_fixed_bins_open_ended_and_out_of_range_values():
    reference = np.arange(1000, dtype=float)  # 0..999
    edges = fixed_bins(reference, n_bins=10)
    assert edges[0] == -np.inf and edges[-1] == np.inf
    assert len(edges) == 11
    assert np.all(np.diff(edges) > 0)
    ref_counts = histogram(reference, edges)
    assert ref_counts.sum() == 1000
    assert np.all(ref_counts == 100)

    counts = histogram([-1e9, -5.0, 5000.0, 1e12, np.inf, -np.inf], edges)
    assert counts[0] == 3 and counts[-1] == 3
    assert counts[1:-1].sum() == 0


def test_fixed_bins_dedup_and_constant_reference():
    zero_inflated = np.r_[np.zeros(900), np.arange(1, 101)]
    edges = fixed_bins(zero_inflated, n_bins=10)
    assert np.all(np.diff(edges) > 0)  # duplicated quantiles removed
    assert len(edges) < 11
    const = fixed_bins(np.full(50, 3.0), n_bins=10)
    assert const.tolist() == [-np.inf, 2.5, np.inf]  # the edge moved off the mass point at 3.0
    assert histogram([2.0, 3.0, 4.0], const).tolist() == [1, 2]


def test_fixed_bins_keep_a_mass_point_in_one_bin_despite_rounding():
    # 18% of confidences are exactly 1/27 (uniform probability rows); the same value computed by
    # another code path may differ in the last bit and must still land in the same bin.
    rng = np.random.default_rng(1)
    ref = np.r_[np.full(180, 1 / 27), rng.uniform(0.3, 1.0, 820)]
    edges = fixed_bins(ref, 10)
    assert not np.isin(edges, ref).any()
    cur = np.r_[np.full(180, np.nextafter(1 / 27, 0)), np.full(20, np.nextafter(1 / 27, 1))]
    assert histogram(cur, edges)[np.searchsorted(edges, 1 / 27, side="right") - 1] == 200
    # NaN / inf in the reference are ignored for the quantiles
    assert np.array_equal(fixed_bins([np.nan, 1, 2, 3, np.inf], 2), fixed_bins([1, 2, 3], 2))


def test_fixed_bins_rejects_bad_input():
    with pytest.raises(ValueError, match="reference is empty"):
        fixed_bins([])
    with pytest.raises(ValueError, match="reference is empty"):
        fixed_bins([np.nan])
    with pytest.raises(ValueError, match="n_bins"):
        fixed_bins([1, 2, 3], n_bins=0)


def test_edges_json_round_trip():
    edges = fixed_bins(np.random.default_rng(0).lognormal(size=1000), 10)
    as_json = edges_to_json(edges)
    assert as_json[0] == "-inf" and as_json[-1] == "inf"
    text = json.dumps(as_json, allow_nan=False)  # strict JSON, no Infinity
    back = edges_from_json(json.loads(text))
    assert np.array_equal(back, edges)
    assert back[0] == -np.inf and back[-1] == np.inf
    # Also accepted: None at the ends, real infinities, "Infinity" strings.
    assert edges_from_json([None, 1.0, None]).tolist() == [-np.inf, 1.0, np.inf]
    assert edges_from_json([float("-inf"), 0, "Infinity"]).tolist() == [-np.inf, 0.0, np.inf]
    with pytest.raises(ValueError):
        edges_from_json([0.0, None, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        edges_from_json([2.0, 1.0])


def test_histogram_drops_nan_and_handles_empty():
    edges = np.array([-np.inf, 0.0, 1.0, np.inf])
    assert histogram([np.nan, -1, 0, 0.5, 1, 2], edges).tolist() == [1, 2, 2]
    assert histogram([], edges).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="empty"):
        psi([1, 2, 3], histogram([], edges))


def test_category_counts():
    cats = [10, 40, 50]
    vals = [10, 10, 40, 2583, 10, 9999]
    assert category_counts(vals, cats).tolist() == [3, 1, 0]
    assert category_counts(vals, cats, include_other=True).tolist() == [3, 1, 0, 2]
    assert category_counts(np.array(vals), cats).tolist() == [3, 1, 0]
    assert category_counts(["a", "b", "a", "z"], ["a", "b"], include_other=True).tolist() == [2, 1, 1]
    # mixed types are not coerced to strings: "10" is not 10
    assert category_counts([10, "10", "x"], [10, "x"], include_other=True).tolist() == [1, 1, 1]
    assert category_counts([], cats, include_other=True).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="categories is empty"):
        category_counts([1], [])
    with pytest.raises(ValueError, match="duplicate"):
        category_counts([1], [1, 1])


# --------------------------------------------------------------------------
# Chi-square
# --------------------------------------------------------------------------
def test_chi_square_identical_and_different():
    same = chi_square([100, 200, 300, 0], [100, 200, 300, 0])
    assert isinstance(same, ChiResult)
    assert same.pvalue == pytest.approx(1.0)
    assert same.statistic == pytest.approx(0.0, abs=1e-9)
    assert same.cramers_v == pytest.approx(0.0, abs=1e-6)
    assert same.dof == 2  # the all-zero column is dropped
    # Proportional (not identical) counts are also homogeneous.
    prop = chi_square([100, 200, 300], [10, 20, 30])
    assert prop.pvalue == pytest.approx(1.0) and prop.cramers_v == pytest.approx(0.0, abs=1e-6)

    diff = chi_square([500, 500], [900, 100])
    assert diff.pvalue < 1e-10
    # 2x2 table: V = |phi|; shares 0.7/0.3 overall -> phi = 0.4/sqrt(4 * 0.21)
    assert diff.cramers_v == pytest.approx(0.2 / math.sqrt(0.21), rel=1e-9)
    assert 0 < diff.cramers_v <= 1
    assert json.loads(json.dumps(diff.as_dict())) == diff.as_dict()

    degenerate = chi_square([5, 0], [7, 0])
    assert (degenerate.pvalue, degenerate.dof, degenerate.cramers_v) == (1.0, 0, 0.0)


# --------------------------------------------------------------------------
# rate_shift
# --------------------------------------------------------------------------
def test_rate_shift():
    assert rate_shift(0.05, 1000, 0.05, 1000) == 0.0
    assert rate_shift(0.05, 100, 0.05, 37) == 0.0
    assert rate_shift(0.0, 100, 0.0, 100) == 0.0  # single occupied bin
    # Symmetric with equal window sizes, near-symmetric otherwise.
    a = rate_shift(0.05, 10_000, 0.20, 10_000)
    b = rate_shift(0.20, 10_000, 0.05, 10_000)
    assert a == pytest.approx(b)
    c = rate_shift(0.20, 5_000, 0.05, 20_000)
    assert c == pytest.approx(a, rel=0.05)
    # Same value as the explicit 2-bin PSI, correction (1/n_ref + 1/n_cur).
    direct = psi([500, 9500], [2000, 8000])
    assert a == pytest.approx(direct.value)
    assert direct.expected_noise == pytest.approx(1 / 10_000 + 1 / 10_000)
    assert a > 0.1
    # Correction: a small wobble on tiny windows is no shift.
    assert rate_shift(0.10, 50, 0.12, 50) == 0.0
    assert rate_shift(0.10, 50, 0.12, 50, correct=False) > 0.0
    # Monotone in the size of the move.
    assert rate_shift(0.1, 1e5, 0.3, 1e5) > rate_shift(0.1, 1e5, 0.2, 1e5) > 0
    with pytest.raises(ValueError, match="ref_rate"):
        rate_shift(1.5, 10, 0.1, 10)
    with pytest.raises(ValueError, match="cur_n"):
        rate_shift(0.1, 10, 0.1, 0)


# --------------------------------------------------------------------------
# drift_level
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "score, level",
    [
        (None, "NONE"),
        (float("nan"), "NONE"),
        (0.0, "NONE"),
        (0.1, "NONE"),
        (0.1000001, "WARNING"),
        (0.2, "WARNING"),
        (0.2000001, "ALERT"),
        (0.3, "ALERT"),
        (0.3000001, "CRITICAL"),
        (5.0, "CRITICAL"),
        (float("inf"), "CRITICAL"),
        (np.float64(0.15), "WARNING"),
    ],
)
def test_drift_level_boundaries(score, level):
    assert drift_level(score) == level


def test_drift_level_custom_thresholds():
    assert drift_level(0.06, warning=0.05, alert=0.5, critical=0.9) == "WARNING"
    with pytest.raises(ValueError):
        drift_level(0.1, warning=0.3, alert=0.2, critical=0.1)


# --------------------------------------------------------------------------
# Empty / invalid inputs
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: psi([], []), "ref_counts is empty"),
        (lambda: psi([0, 0], [1, 2]), "ref_counts is empty"),
        (lambda: psi([1, 2], [0, 0]), "cur_counts is empty"),
        (lambda: psi([1, 2], [1, 2, 3]), "same number of bins"),
        (lambda: psi([1, -2], [1, 2]), "negative"),
        (lambda: psi([1, np.nan], [1, 2]), "NaN"),
        (lambda: chi_square([0, 0], [0, 0]), "empty"),
    ],
)
def test_empty_and_invalid_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------
# Performance sanity (not timed)
# --------------------------------------------------------------------------
def test_one_million_values():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=1_000_000)
    cur = rng.normal(0.1, 1.0, size=1_000_000)
    edges = fixed_bins(ref, 20)
    h_ref, h_cur = histogram(ref, edges), histogram(cur, edges)
    assert h_ref.sum() == h_cur.sum() == 1_000_000
    res = psi(h_ref, h_cur)
    assert 0.0 < res.value < 0.1
    labels = rng.choice(K_CLASSES, size=1_000_000, p=P_RAKUTEN)
    counts = category_counts(labels, list(range(K_CLASSES)))
    assert counts.sum() == 1_000_000
    assert psi(counts, counts).value == 0.0


def test_module_is_pure():
    import inspect

    src = inspect.getsource(stats)
    for forbidden in ("print(", "import logging", "open(", "import os"):
        assert forbidden not in src
