"""Tests of the synthetic Rakuten catalogue generator (mlops_cli.synth)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mlops_cli.categories import (
    CATEGORY_NAMES,
    CATEGORY_NAMES_FR,
    CLASS_COUNTS,
    PRDTYPECODES,
    category_name,
)
from mlops_cli.synth import (
    DRIFT_KINDS,
    GENERIC_TITLES,
    LABEL_NOISE,
    NEAR_DUPLICATES,
    generate_products,
    write_catalogue,
)

ROWS = 20_000
SEED = 11

X_HEADER = ",designation,description,productid,imageid"
Y_HEADER = ",prdtypecode"

FR_MARKERS = re.compile(r"\b(?:et|pour|avec|les|des|vous)\b")
EN_MARKERS = re.compile(r"\b(?:the|and|with|your|for)\b")
DE_MARKERS = re.compile(r"\b(?:und|mit|für|der|die)\b")
JA_CHARS = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
HTML_TAG = re.compile(r"<(?:p|br|li|b|ul)\b[^>]*>")
HTML_ENTITY = re.compile(r"&(?:[a-zA-Z]+|#\d+);")
MOJIBAKE = re.compile(r"Ã[\u00a0-\u00bf]|Â[\u00a0-\u00bf]|â€")
WORD = re.compile(r"[^\W\d_]+")


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return generate_products(ROWS, seed=SEED)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalogue") / "raw"  # does not exist yet
    x_path, y_path = write_catalogue(out, ROWS, seed=SEED)
    return x_path, y_path


def _nonempty(df: pd.DataFrame) -> pd.Series:
    return df.description[df.description != ""]


def _text(df: pd.DataFrame) -> pd.Series:
    return df.designation + " " + df.description


def _vocab(df: pd.DataFrame) -> set[str]:
    vocab: set[str] = set()
    for t in _text(df).str.lower().tolist():
        vocab.update(WORD.findall(t))
    return vocab


def _oov_rate(df: pd.DataFrame, vocab: set[str]) -> float:
    total = oov = 0
    for t in _text(df).str.lower().tolist():
        words = WORD.findall(t)
        total += len(words)
        oov += sum(w not in vocab for w in words)
    return oov / total


def _class_shares(df: pd.DataFrame) -> pd.Series:
    return df.prdtypecode.value_counts(normalize=True).reindex(list(PRDTYPECODES), fill_value=0)


def _priors() -> pd.Series:
    s = pd.Series(CLASS_COUNTS, dtype=float)
    return (s / s.sum()).reindex(list(PRDTYPECODES))


# --- categories ---------------------------------------------------------------------------

def test_categories_tables():
    assert len(PRDTYPECODES) == 27
    assert list(PRDTYPECODES) == sorted(CLASS_COUNTS)
    assert sum(CLASS_COUNTS.values()) == 84_916
    assert CLASS_COUNTS[2583] == 10_209 and CLASS_COUNTS[60] == 832
    assert set(CATEGORY_NAMES) == set(CATEGORY_NAMES_FR) == set(PRDTYPECODES)
    assert category_name(2583) == "Pool"
    assert category_name(10) == "Books"
    assert category_name(9999) == "unknown"
    assert category_name("not a code") == "unknown"


# --- file format --------------------------------------------------------------------------

def test_written_files_exact_headers(catalogue):
    x_path, y_path = catalogue
    assert x_path.name == "X_train_update.csv"
    assert y_path.name == "Y_train_CVw08PX.csv"
    with open(x_path, encoding="utf-8", newline="") as fh:
        assert fh.readline().rstrip("\r\n") == X_HEADER
    with open(y_path, encoding="utf-8", newline="") as fh:
        assert fh.readline().rstrip("\r\n") == Y_HEADER
        assert fh.readline().rstrip("\r\n").startswith("0,")


def test_written_files_read_back(catalogue, df):
    x_path, y_path = catalogue
    x = pd.read_csv(x_path, index_col=0)
    y = pd.read_csv(y_path, index_col=0)
    assert list(x.columns) == ["designation", "description", "productid", "imageid"]
    assert list(y.columns) == ["prdtypecode"]
    assert len(x) == len(y) == ROWS
    assert list(x.index) == list(range(ROWS))
    assert x.index.equals(y.index)
    assert x.productid.dtype == np.int64 and x.imageid.dtype == np.int64
    # Same content as the in-memory frame (same rows, seed): files line up with it.
    assert x.designation.tolist() == df.designation.tolist()
    assert x.description.fillna("").tolist() == df.description.tolist()
    assert x.productid.tolist() == df.productid.tolist()
    assert y.prdtypecode.tolist() == df.prdtypecode.tolist()
    # Empty descriptions are written as empty fields (read back as NaN, as in the real file).
    assert x.description.isna().mean() == pytest.approx((df.description == "").mean())


def test_tricky_descriptions_round_trip(catalogue, df):
    d = df.description
    tricky = d.str.contains(",", regex=False) & d.str.contains('"', regex=False) & \
        d.str.contains("\n", regex=False)
    assert tricky.sum() >= 5, "some descriptions must hold a comma, a quote and a newline"
    x = pd.read_csv(catalogue[0], index_col=0)
    idx = np.flatnonzero(tricky.to_numpy())
    assert x.description.iloc[idx].tolist() == d.iloc[idx].tolist()


def test_write_catalogue_creates_dir_and_is_deterministic(tmp_path):
    a = write_catalogue(tmp_path / "a" / "b", 300, seed=4)
    b = write_catalogue(tmp_path / "c", 300, seed=4)
    assert a[0].parent.is_dir()
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()
    assert a[0].read_bytes().decode("utf-8")  # valid UTF-8


# --- realism ------------------------------------------------------------------------------

def test_columns_and_dtypes(df):
    assert list(df.columns) == ["designation", "description", "productid", "imageid",
                                "prdtypecode"]
    assert len(df) == ROWS
    assert df.productid.dtype == np.int64 and df.imageid.dtype == np.int64
    assert df.description.isna().sum() == 0 and df.designation.isna().sum() == 0
    assert (df.designation.str.len() > 0).all()
    assert set(df.prdtypecode.unique()) <= set(PRDTYPECODES)


def test_class_shares_follow_priors(df):
    shares, priors = _class_shares(df), _priors()
    assert (shares - priors).abs().max() < 0.02
    assert shares[2583] == pytest.approx(0.12, abs=0.015)
    assert shares[60] == pytest.approx(0.01, abs=0.005)
    assert (shares > 0).all()


def test_empty_description_rate(df):
    assert 0.30 <= (df.description == "").mean() <= 0.40


def test_title_lengths(df):
    n = df.designation.str.len()
    assert n.mean() == pytest.approx(70, rel=0.15)
    assert n.median() == pytest.approx(66, rel=0.15)
    assert n.quantile(0.25) == pytest.approx(44, rel=0.15)
    assert n.quantile(0.75) == pytest.approx(92, rel=0.15)
    assert n.max() <= 250


def test_description_lengths(df):
    n = _nonempty(df).str.len()
    assert n.median() == pytest.approx(640, rel=0.15)
    assert n.quantile(0.25) == pytest.approx(230, rel=0.2)
    assert n.quantile(0.75) == pytest.approx(970, rel=0.15)
    assert n.mean() == pytest.approx(770, rel=0.15)
    assert n.max() > 3000  # long tail


def test_titles_carry_brands_sizes_volumes_and_model_codes(df):
    t = df.designation
    assert t.str.contains(r"\d").mean() > 0.5
    assert t.str.contains(r"\bTome \d+").sum() > 50
    assert t.str.contains(r"N° ?\d+").sum() > 50
    assert t.str.contains(r"\b[A-Z]{2}-\d{3,4}\b").sum() > 50
    assert t.str.contains(r"Réf\. \d+[A-Z]").sum() > 50
    assert t.str.contains(r"\d+ ?(?:cm|mAh|W|ml|g|kg|pcs)\b").mean() > 0.1
    assert t.str.contains(r"\b(?:Intex|Bestway|Funko|Lego|Nintendo|Gallimard)\b").sum() > 100


def test_html_entities_mojibake_rates(df):
    d = _nonempty(df)
    assert 0.20 <= d.str.contains(HTML_TAG).mean() <= 0.30
    assert 0.55 <= d.str.contains(HTML_ENTITY).mean() <= 0.65
    for tag in ("<p>", "<br />", "<li>", "<b>"):
        assert d.str.contains(tag, regex=False).sum() > 50, tag
    for ent in ("&eacute;", "&amp;", "&#39;"):
        assert d.str.contains(ent, regex=False).sum() > 50, ent
    moji = d.str.contains(MOJIBAKE).mean()
    assert 0.005 <= moji <= 0.03
    assert d.str.contains("Ã©", regex=False).sum() > 5
    assert d.str.contains(",", regex=False).mean() > 0.5
    assert 0.01 < d.str.contains('"', regex=False).mean() < 0.2
    assert 0.1 < d.str.contains("\n", regex=False).mean() < 0.5


def test_language_mix(df):
    text = _text(df)
    long = text[df.description.str.len() >= 200]  # enough text to see function words
    assert len(long) > 5000
    fr = long.str.contains(FR_MARKERS).mean()
    en = long.str.contains(EN_MARKERS).mean()
    de = long.str.contains(DE_MARKERS).mean()
    assert 0.54 <= fr <= 0.70, fr
    assert 0.24 <= en <= 0.36, en
    assert 0.01 <= de <= 0.06, de
    ja = text.str.contains(JA_CHARS).mean()
    assert 0.015 <= ja <= 0.05, ja
    # Languages are per product, not mixed: few rows carry both French and English markers.
    both = (long.str.contains(FR_MARKERS) & long.str.contains(EN_MARKERS)).mean()
    assert both < 0.03


def test_class_words_and_shared_vocabulary(df):
    fr_rows = df[_text(df).str.contains(FR_MARKERS)]
    pool = fr_rows[fr_rows.prdtypecode == 2583]
    assert _text(pool).str.contains("piscine").mean() > 0.5
    assert _text(fr_rows[fr_rows.prdtypecode == 2905]).str.contains("windows").mean() > 0.3
    # Generic words are shared by all classes.
    has_generic = _text(fr_rows).str.contains(r"\b(?:couleur|produit|qualité|taille)\b")
    per_class = has_generic.groupby(fr_rows.prdtypecode).mean()
    assert (per_class > 0.2).all()
    # Overlap groups share vocabulary: "jouet" appears in toys and board games rows,
    # "console" in games, accessories, consoles and game lots.
    for word, classes in (("jouet", (1280, 1281)), ("console", (50, 60, 2462)),
                          ("livre", (2403, 2705)), ("jardin", (2582, 2585))):
        for code in classes:
            sub = _text(fr_rows[fr_rows.prdtypecode == code])
            assert sub.str.contains(word).mean() > 0.05, (word, code)


def test_deterministic():
    a = generate_products(2000, seed=3)
    b = generate_products(2000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = generate_products(2000, seed=4)
    assert not a.designation.equals(c.designation)
    for kind in DRIFT_KINDS:
        pd.testing.assert_frame_equal(generate_products(500, seed=9, drift=kind),
                                      generate_products(500, seed=9, drift=kind))


def test_ids(df):
    assert df.productid.is_unique and df.imageid.is_unique
    assert df.productid.between(100_000_000, 9_999_999_999).all()
    assert df.imageid.between(1_000_000_000, 9_999_999_999).all()
    other = generate_products(ROWS, seed=SEED + 1)
    overlap = len(set(df.productid) & set(other.productid)) / ROWS
    assert overlap < 0.01
    one = generate_products(1, seed=0)
    assert len(one) == 1 and 100_000_000 <= int(one.productid.iloc[0]) < 10**10


def test_start_productid():
    g = generate_products(5000, seed=2, start_productid=300_000_000)
    assert int(g.productid.iloc[0]) == 300_000_000
    assert g.productid.is_monotonic_increasing and g.productid.is_unique
    assert g.imageid.is_unique
    assert g.productid.dtype == np.int64


# --- drift --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drifted() -> dict[str, pd.DataFrame]:
    return {kind: generate_products(8000, seed=SEED + 100, drift=kind) for kind in DRIFT_KINDS}


def test_drift_none_keeps_distribution(df, drifted):
    none = drifted["none"]
    ref_vocab = _vocab(df)
    assert _oov_rate(none, ref_vocab) < 0.03
    assert none.designation.str.len().median() == pytest.approx(
        df.designation.str.len().median(), rel=0.08)
    assert _nonempty(none).str.len().median() == pytest.approx(
        _nonempty(df).str.len().median(), rel=0.1)
    assert (none.description == "").mean() == pytest.approx(
        (df.description == "").mean(), abs=0.03)
    tvd = 0.5 * (_class_shares(none) - _class_shares(df)).abs().sum()
    assert tvd < 0.06


def test_drift_vocabulary(df, drifted):
    none, voc = drifted["none"], drifted["vocabulary"]
    ref_vocab = _vocab(df)
    oov_none, oov_voc = _oov_rate(none, ref_vocab), _oov_rate(voc, ref_vocab)
    assert oov_voc > 0.15 and oov_voc > 5 * oov_none, (oov_none, oov_voc)
    # Far less French, far more Japanese / German.
    assert _text(voc).str.contains(FR_MARKERS).mean() < \
        0.6 * _text(none).str.contains(FR_MARKERS).mean()
    assert _text(voc).str.contains(JA_CHARS).mean() > 2.5 * _text(none).str.contains(
        JA_CHARS).mean()
    # Lengths and classes are not what this drift targets.
    assert voc.designation.str.len().median() == pytest.approx(
        none.designation.str.len().median(), rel=0.15)
    assert 0.5 * (_class_shares(voc) - _class_shares(none)).abs().sum() < 0.06


def test_drift_length(drifted):
    none, ln = drifted["none"], drifted["length"]
    assert ln.designation.str.len().median() > 2 * none.designation.str.len().median()
    assert _nonempty(ln).str.len().median() > 2 * _nonempty(none).str.len().median()
    assert (ln.description == "").mean() < 0.10
    assert (none.description == "").mean() > 0.30
    assert 0.5 * (_class_shares(ln) - _class_shares(none)).abs().sum() < 0.06


def test_drift_classes(drifted):
    none, cl = drifted["none"], drifted["classes"]
    shares = _class_shares(cl)
    tvd = 0.5 * (shares - _class_shares(none)).abs().sum()
    assert tvd > 0.5
    assert shares[2583] < 0.005  # the usual majority class vanishes
    assert shares.nlargest(4).sum() > 0.7  # a few classes dominate
    assert (shares == 0).sum() >= 10
    assert cl.designation.str.len().median() == pytest.approx(
        none.designation.str.len().median(), rel=0.15)


# --- marketplace mess: label noise, near-duplicates, generic titles ------------------------

# DATA_FACTS families, plus the neighbours synth documents (1180 between 1140 and 1281, ...).
FAMILIES = ({10, 2403, 2705, 2280, 2522}, {40, 2462, 2905, 50, 60},
            {1280, 1281, 1302, 1320, 1301, 1300, 1140, 1180, 1160, 2582, 2583},
            {1560, 2060, 1920, 2582, 2583, 2585, 1302, 1940, 2220, 1320})


def _neighbours(a: int, b: int) -> bool:
    return any(a in f and b in f for f in FAMILIES)


@pytest.fixture(scope="module")
def prov() -> pd.DataFrame:
    return generate_products(ROWS, seed=SEED, provenance=True)


def test_provenance_columns_leave_the_catalogue_unchanged(df, prov):
    pd.testing.assert_frame_equal(prov[list(df.columns)], df)
    assert prov.duplicate_of.dtype == np.int64 and prov.generic_title.dtype == bool


def test_label_noise_rate_goes_to_neighbours(prov):
    own = prov[prov.duplicate_of < 0]
    noisy = own[own.content_code != own.prdtypecode]
    assert len(noisy) / len(own) == pytest.approx(LABEL_NOISE, abs=0.01)
    assert all(_neighbours(a, b) for a, b in zip(noisy.content_code, noisy.prdtypecode))
    # Noise comes from the neighbours, not uniformly: a used book is mistaken for a new one.
    books = noisy[noisy.prdtypecode == 10].content_code
    assert books.isin([2705, 2403, 2280]).all() and (books == 2705).mean() > 0.4
    none = generate_products(3000, seed=SEED, label_noise=0.0, near_duplicates=0.0,
                             provenance=True)
    assert (none.content_code == none.prdtypecode).all()


def test_near_duplicates_filed_under_neighbouring_codes(prov):
    dup = prov[prov.duplicate_of >= 0]
    assert len(dup) / len(prov) == pytest.approx(NEAR_DUPLICATES, abs=0.01)
    src = prov.loc[dup.duplicate_of.to_numpy()]
    assert (prov.loc[src.index, "duplicate_of"] == -1).all()  # copies of originals, no chains
    assert (src.prdtypecode.to_numpy() != dup.prdtypecode.to_numpy()).all()
    assert all(_neighbours(a, b) for a, b in zip(src.prdtypecode, dup.prdtypecode))
    same_title = src.designation.to_numpy() == dup.designation.to_numpy()
    assert 0.25 < same_title.mean() < 0.6  # the rest nearly the same (number, case, a suffix)
    # Seen from the data alone: identical titles under two codes of one family.
    codes = prov.groupby("designation").prdtypecode.nunique()
    assert (codes > 1).sum() > 0.005 * ROWS
    # Their descriptions are mostly the same text, sometimes dropped.
    assert (src.description.to_numpy() == dup.description.to_numpy()).mean() > 0.5


def test_generic_and_very_short_titles(prov):
    gen = prov[prov.generic_title]
    assert len(gen) / len(prov) == pytest.approx(GENERIC_TITLES, abs=0.01)
    short = gen.designation.str.len() <= 20
    assert 0.3 < short.mean() < 0.8
    assert gen.designation.isin(["Lot", "Neuf", "Taille unique"]).sum() > 5
    # No class word in a generic title: "piscine" never names a generic pool title.
    pool = gen[gen.prdtypecode == 2583].designation.str.lower()
    assert not pool.str.contains("piscine|pool|pompe").any()
    assert (prov.designation.str.len() <= 5).mean() < 0.03


def test_product_lines_recur_with_size():
    """A long tail of line names: most seen once in a few thousand rows, recurring at scale."""
    from collections import Counter

    from mlops_cli.synth import _compiled

    first_words = {name.split()[0] for name in _compiled().line_names}

    def line_counts(rows: int) -> Counter:
        titles = generate_products(rows, seed=2).designation.tolist()
        return Counter(w for t in titles for w in t.split() if w in first_words)

    small, large = line_counts(3000), line_counts(30000)
    assert len(small) > 500
    assert sum(c == 1 for c in small.values()) / len(small) > 0.5
    assert sum(c >= 5 for c in large.values()) > 3 * sum(c >= 5 for c in small.values())


def test_mess_is_deterministic_and_seeded():
    kw = {"label_noise": 0.2, "near_duplicates": 0.1, "generic_titles": 0.1, "provenance": True}
    a, b = generate_products(1500, seed=8, **kw), generate_products(1500, seed=8, **kw)
    pd.testing.assert_frame_equal(a, b)
    c = generate_products(1500, seed=9, **kw)
    assert not a.duplicate_of.equals(c.duplicate_of)
    assert (a.content_code != a.prdtypecode).mean() > 0.2
    # The label mix stays the real one whatever the rates (noise moves content, not labels).
    assert a.prdtypecode.equals(generate_products(1500, seed=8, provenance=True).prdtypecode)


@pytest.mark.parametrize("name", ["label_noise", "near_duplicates", "generic_titles"])
def test_invalid_rates(name, tmp_path):
    for bad in (-0.1, 0.9, "0.1", True):
        with pytest.raises(ValueError, match=name):
            generate_products(10, **{name: bad})
    with pytest.raises(ValueError, match=name):
        write_catalogue(tmp_path / "z", 10, **{name: 0.7})
    assert not (tmp_path / "z").exists()


# --- invalid arguments --------------------------------------------------------------------

@pytest.mark.parametrize("rows", [0, -5])
def test_invalid_rows(rows):
    with pytest.raises(ValueError, match="rows"):
        generate_products(rows)


def test_invalid_drift_names_allowed_kinds(tmp_path):
    with pytest.raises(ValueError) as exc:
        generate_products(10, drift="seasonal")
    msg = str(exc.value)
    assert "seasonal" in msg
    for kind in DRIFT_KINDS:
        assert kind in msg
    with pytest.raises(ValueError, match="drift"):
        write_catalogue(tmp_path / "x", 10, drift="bogus")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="rows"):
        write_catalogue(tmp_path / "y", 0)


# --- learnability -------------------------------------------------------------------------

@pytest.mark.slow
def test_linear_model_weighted_f1_is_realistic():
    """TF-IDF + LinearSVC must do well but not perfectly (real public work: ~0.82)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    data = generate_products(ROWS, seed=3)
    full = _text(data).tolist()
    title = data.designation.tolist()
    y = data.prdtypecode.to_numpy()
    tr, te = train_test_split(np.arange(len(data)), test_size=0.2, random_state=0, stratify=y)
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)

    def features(ix, fit):
        a, b = [full[i] for i in ix], [title[i] for i in ix]
        if fit:
            return sp.hstack([words.fit_transform(a), chars.fit_transform(b)]).tocsr()
        return sp.hstack([words.transform(a), chars.transform(b)]).tocsr()

    clf = LinearSVC(C=0.5).fit(features(tr, True), y[tr])
    f1 = f1_score(y[te], clf.predict(features(te, False)), average="weighted")
    assert 0.75 <= f1 <= 0.95, f1
