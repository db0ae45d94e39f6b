"""Model selection, the plain baseline and calibration: what `mlops train` builds (steps/train.py
logs and registers it).

1. Rows. The training rows (never the holdout) are split by productid hash into a search part and
   a validation part (VALIDATION_FRACTION of them; dataset.validation_mask: disjoint from the
   holdout, stable as the catalogue grows). Each part is balanced with its share of the
   per-class cap; together they are the fit rows. The rows a human label gave their code are
   always among them (dataset.kept_labels: the latest labels only where a class's labels alone
   exceed the cap), the rest of the cap a seeded sample of the catalogue's other rows.
2. Small or large. While the validation part would have fewer than CV_BELOW_VALIDATION_ROWS rows
   (its weighted F1 would be too noisy to choose by: ~0.015 standard error at 700 rows), the
   choice is made by k-fold cross-validation over all fit rows (CV_FOLDS folds by another
   productid hash, so never the holdout); otherwise by successive halving on the search part,
   scored on the validation part.
3. Features, once, in this process. prepare() cleans the texts once; the TF-IDF blocks some
   candidate reads, and the plain baseline's words, are fitted (small: on all fit rows; large: on
   the search part) and applied to the other rows. The plain and the pipeline's word blocks share
   one counting pass (_fit_shared_words). Every candidate reuses these matrices.
4. Search. Candidates differ in classifier settings (regularisation strength first, then feature
   blocks, class weighting, family: SGD modified Huber, LinearSVC; logistic regression scores like
   LinearSVC at ten times the time: --param classifier=logreg pins it) and include the plain
   baseline itself, so the choice is never worse than plain where it is scored. Small data:
   SMALL_GRID, with character n-grams over title + description (costly on large data, worth most
   where each word is seen a few times). Large data: GRID.
   `--param k=v` pins a setting in every candidate: it is not searched (a setting only one
   family uses, alpha for SGD, C for LinearSVC and logistic regression, also pins the family).
   Successive halving: all candidates are first fitted on a ninth (or a third) of the search
   rows, the best third (rounded down) go on to three times as many rows, and so on until one
   would be left:
   it is chosen (its fit there gives calibration its decision values on the validation part;
   the final fit is on all fit rows anyway). The regularisation of a candidate fitted
   on n of N rows is scaled by sqrt(N/n) (alpha up, C down... in effect per row): its optimum
   moves that way with the row count (~4k real rows: alpha 2e-4..8e-4; 85k: 2e-5 suffices), so
   small rungs (and k-fold fits on (k-1)/k of the rows) rank candidates the way the full size
   would. Budget: TRAIN_SEARCH_MAX_CANDIDATES and TRAIN_SEARCH_SECONDS (no new fit starts past
   it). The pick: the best PROMOTION_METRIC out of fold (small) or on the validation part (large).
5. Calibration. A temperature T and a noise floor epsilon (calibration.fit_calibration) fitted on
   the chosen candidate's out-of-sample decision values: out of fold (small), or on the
   validation part from its last rung's fit (large).
6. Final fit. The chosen classifier is refitted on all fit rows (large: search + validation
   parts, the vocabularies those of the search part), wrapped with T, assembled into the
   servable pipeline. The plain baseline (word 1-2 gram TF-IDF + LinearSVC defaults,
   features.PLAIN_PARAMS) is fitted on the same rows (in a thread, beside the search) and scored
   on the same holdout.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import dataset
from .errors import Conflict
from .features import PLAIN_PARAMS, assemble, char_branch, make_classifier, make_prepare, pick_text, prepare, \
    text_char_branch, word_branch

log = logging.getLogger(__name__)

PLAIN = "plain"
BLOCK_NAMES = ("words", "title_chars", "text_chars", PLAIN)
# Settings only some classifier families use: pinning one pins the family too.
FAMILY_KEYS = {"alpha": ("sgd",), "C": ("linearsvc", "logreg")}
# Settings a candidate may vary (what its row in the search table shows).
SHOWN = ("classifier", "alpha", "C", "class_weight", "features")

MIN_RUNG_ROWS = 3000   # successive halving only when the first rung still has this many rows
ETA = 3                # rows x3 and candidates /3 from one rung to the next
FINALISTS = 1          # the halving stops where this many are left (the chosen one)
# k-fold cross-validation instead of the single validation part while that part would be smaller
# than this: the weighted F1 of n rows has a standard error of ~sqrt(0.2/n) (0.015 at 700 rows,
# 0.007 at 4,000), so a pick on a small part is mostly noise; out-of-fold scores use every fit
# row. There fits are sub-second, and the k fits per candidate are affordable.
CV_BELOW_VALIDATION_ROWS = 4000
CV_FOLDS = 3
TEXT_CHAR_FEATURES = 300_000  # the text character block's vocabulary cap when a candidate uses it


def _sgd(alpha: float, class_weight: str = "balanced") -> dict:
    return {"classifier": "sgd", "alpha": alpha, "class_weight": class_weight}


def _svc(c: float, class_weight: str = "none") -> dict:
    return {"classifier": "linearsvc", "C": c, "class_weight": class_weight}


def _text_chars(params: dict) -> dict:
    return {**params, "text_char_max_features": TEXT_CHAR_FEATURES}


# Small data (cross-validated): fewer, stronger candidates. Character n-grams over title +
# description (misspellings, inflections, multilingual compounds: what word n-grams miss when
# each word is seen a few times), regularisation on a log scale around what small real data
# wants (~4k real rows: alpha 2e-4..8e-4; generated rows want more), title characters, SVC.
SMALL_GRID: tuple[tuple[dict, tuple[str, ...]], ...] = (
    *((_text_chars(_sgd(a)), ("words", "title_chars", "text_chars")) for a in (6e-4, 2e-3, 6e-3, 2e-2)),
    *((_sgd(a), ("words", "title_chars")) for a in (6e-4, 2e-3)),
    (_text_chars(_svc(0.1)), ("words", "title_chars", "text_chars")),
)

# Large data (successive halving). In priority order (the budget keeps the first ones):
# regularisation strength first, on a log scale, then the other family. (Class weighting moved
# weighted F1 little once regularisation was right, on real data too: not searched here.)
# No text character block: on large data it costs more than the whole search (a pass over
# every description) and words are seen often enough.
GRID: tuple[tuple[dict, tuple[str, ...]], ...] = (
    *((_sgd(a), ("words", "title_chars")) for a in (6e-4, 2e-4, 6e-5, 2e-3, 2e-5)),
    (_svc(0.1), ("words", "title_chars")),
)


@dataclass
class Candidate:
    name: str
    params: dict[str, Any]          # every setting of the pipeline it would be
    blocks: tuple[str, ...]         # feature blocks it reads (of BLOCK_NAMES)
    rungs: list[dict] = field(default_factory=list)  # per fit: rows, score, weighted_f1, seconds
    status: str = "pending"

    @property
    def shown(self) -> dict[str, Any]:
        p = self.params
        out = {"classifier": p["classifier"], "class_weight": p["class_weight"],
               "features": "+".join(self.blocks)}
        out["alpha" if p["classifier"] == "sgd" else "C"] = p["alpha" if p["classifier"] == "sgd" else "C"]
        return out

    def row(self) -> dict[str, Any]:
        last = self.rungs[-1] if self.rungs else {}
        return {"name": self.name, "params": self.shown, "status": self.status,
                "validation_score": last.get("score"), "validation_weighted_f1": last.get("weighted_f1"),
                "rows": last.get("rows"), "seconds": round(sum(r["seconds"] for r in self.rungs), 3)}


def _name(params: dict, blocks: tuple[str, ...]) -> str:
    if blocks == (PLAIN,):
        return PLAIN
    strength = f"alpha={params['alpha']:g}" if params["classifier"] == "sgd" else f"C={params['C']:g}"
    cw = "" if params["class_weight"] in (None, "none") else f" {params['class_weight']}"
    shape = {("words",): " words-only", ("words", "text_chars"): " text-chars",
             ("words", "title_chars", "text_chars"): " title+text-chars"}.get(blocks, "")
    return f"{params['classifier']} {strength}{cw}{shape}"


def plain_params(base: dict) -> dict:
    """The plain baseline's settings: the preparation (and seeds) of `base`, PLAIN_PARAMS' model."""
    return {**base, **PLAIN_PARAMS}


def blocks_of(params: dict) -> tuple[str, ...]:
    """The feature blocks a (non-plain) parameter set reads."""
    return ("words", *(("title_chars",) if params["char_max_features"] else ()),
            *(("text_chars",) if params.get("text_char_max_features") else ()))


def candidates(base: dict[str, Any], pinned: dict[str, Any], limit: int, small: bool = False) -> list[Candidate]:
    """The search space with `pinned` applied to every candidate, deduplicated, at most `limit`.

    base: DEFAULT_PARAMS with the pins (and max_per_class resolved). The plain baseline comes
    first, unless a pin contradicts it (then it is not the plain model any more). small: the
    cross-validated grid (SMALL_GRID), else the successive-halving one (GRID).
    """
    out: list[Candidate] = []
    seen: set = set()

    def add(params: dict, blocks: tuple[str, ...]) -> None:
        fam = params["classifier"]
        if any(k in pinned and fam not in fams for k, fams in FAMILY_KEYS.items()):
            return
        key = (blocks, tuple(sorted((k, str(v)) for k, v in params.items())))
        if key not in seen and len(out) < max(1, limit):
            seen.add(key)
            out.append(Candidate(_name(params, blocks), params, blocks))

    plain = plain_params(base)
    if all(plain.get(k) == v for k, v in pinned.items() if k in PLAIN_PARAMS) and \
            not any(k in pinned and "linearsvc" not in fams for k, fams in FAMILY_KEYS.items()):
        add(plain, (PLAIN,))
    for overrides, _blocks in (SMALL_GRID if small else GRID):
        params = {**base, **overrides, **pinned}
        add(params, blocks_of(params))
    if not out:  # every grid point contradicted the pins: the pinned configuration alone
        params = {**base, **pinned}
        add(params, blocks_of(params))
    return out


# --- rows ----------------------------------------------------------------------------------------
@dataclass
class Parts:
    search: pd.DataFrame        # the search part's fit rows (balanced)
    validation: pd.DataFrame    # every validation row (natural class mix: what is scored)
    validation_fit: np.ndarray  # positions in `validation` of the rows the final fit adds
    search_rows_before_balancing: int
    labels_capped: dict[str, int] = field(default_factory=dict)  # {class: human labels the cap left out}

    @property
    def fit_rows(self) -> pd.DataFrame:
        return pd.concat([self.search, self.validation.iloc[self.validation_fit]])


def split_parts(train_rows: pd.DataFrame, *, validation_fraction: float, holdout_fraction: float,
                max_per_class: int | None, seed: int) -> Parts:
    in_val = dataset.validation_mask(train_rows["productid"].to_numpy(), validation_fraction, holdout_fraction)
    search, validation = train_rows[~in_val], train_rows[in_val]  # dataset.split_validation
    if len(validation) == 0 or search["prdtypecode"].nunique() < 2:
        raise Conflict(
            f"Too few training rows ({len(train_rows)}) for a validation part of {validation_fraction:.0%}: "
            "load more products before training.")
    # The human labels always reach the fit (the latest ones when a class's labels alone exceed
    # the cap): each part keeps its own, the cap of a class split between the parts so that both
    # have room for theirs.
    keep, capped = dataset.kept_labels(train_rows, max_per_class)
    keep_search, keep_val = keep[~in_val], keep[in_val]
    cap_search = cap_val = None
    caps_search: dict = {}
    caps_val: dict = {}
    if max_per_class:
        cap_search = max(1, math.ceil(max_per_class * len(search) / len(train_rows)))
        cap_val = max(1, max_per_class - cap_search)
        ks = pd.Series(search["prdtypecode"].to_numpy()[keep_search]).value_counts()
        kv = pd.Series(validation["prdtypecode"].to_numpy()[keep_val]).value_counts()
        for code in ks.index.union(kv.index):
            k_s, k_v = int(ks.get(code, 0)), int(kv.get(code, 0))
            caps_search[code] = min(max(cap_search, k_s), max_per_class - k_v)
            caps_val[code] = max_per_class - caps_search[code]
    search_fit = dataset.balanced(search, cap_search, seed=seed, keep=keep_search, caps=caps_search)
    validation = validation.reset_index(drop=True)
    val_fit = dataset.balanced(validation.assign(_pos=np.arange(len(validation))), cap_val, seed=seed,
                               keep=keep_val, caps=caps_val)
    return Parts(search_fit, validation, np.sort(val_fit["_pos"].to_numpy()), len(search), capped)


# --- features ------------------------------------------------------------------------------------
def _fit_block(branch, search_docs: pd.DataFrame, others: list[pd.DataFrame]):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        fitted = branch.fit_transform(search_docs)
        return branch, fitted, [branch.transform(o) for o in others]


# TfidfVectorizer settings that only weight the counts (everything else decides the counts)
_WEIGHTING = ("min_df", "max_df", "max_features", "norm", "use_idf", "smooth_idf", "sublinear_tf", "vocabulary")


def _counts_compatible(a, b) -> bool:
    """Two word TF-IDF vectorizers count the same n-grams (b's vocabulary a subset of a's)."""
    pa, pb = a.get_params(), b.get_params()
    return all(pa[k] == pb[k] for k in pa if k not in _WEIGHTING) and a.max_df == b.max_df == 1.0 and \
        a.vocabulary is None and b.vocabulary is None and isinstance(b.min_df, int) and \
        isinstance(a.min_df, int) and a.min_df <= b.min_df and not a.max_features


def _fit_shared_words(plain_branch, words_branch, docs: list[pd.DataFrame]):
    """The plain baseline's and the pipeline's word blocks from ONE counting pass: they count the
    same word n-grams and differ only in which they keep (min_df, max_features, chosen as
    scikit-learn does: document frequency, then the largest total counts, ties in term order)
    and in weighting. Each
    fitted vectorizer transforms new text exactly like these matrices (same vocabulary, same idf:
    same documents). Tokenising the texts is most of the features' time on large data."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    pvec, wvec = plain_branch.steps[-1][1], words_branch.steps[-1][1]
    counter = CountVectorizer(**{k: v for k, v in pvec.get_params().items() if k in CountVectorizer().get_params()})
    texts = [pick_text(d) for d in docs]
    counts = [counter.fit_transform(texts[0])] + [counter.transform(t) for t in texts[1:]]
    n = len(counter.vocabulary_)
    df = np.bincount(counts[0].indices, minlength=n)
    keep = np.flatnonzero(df >= wvec.min_df)
    if wvec.max_features and len(keep) > wvec.max_features:
        total = np.asarray(counts[0].sum(axis=0)).ravel()
        keep = np.sort(keep[np.argsort(-total[keep], kind="stable")[: wvec.max_features]])
    terms = np.empty(n, dtype=object)
    for term, j in counter.vocabulary_.items():
        terms[j] = term
    out = []
    for branch, vec, cols in ((plain_branch, pvec, None), (words_branch, wvec, keep)):
        sub = counts if cols is None else [c[:, cols] for c in counts]
        weigh = TfidfTransformer(norm=vec.norm, use_idf=vec.use_idf, smooth_idf=vec.smooth_idf,
                                 sublinear_tf=vec.sublinear_tf).fit(sub[0])
        vec.vocabulary_ = dict(counter.vocabulary_) if cols is None else \
            {t: i for i, t in enumerate(terms[cols].tolist())}
        vec.fixed_vocabulary_ = False
        vec.idf_ = weigh.idf_
        branch.steps[0][1].fit(docs[0])
        mats = [weigh.transform(c, copy=c is counts[k]) for k, c in enumerate(sub)]
        out.append((branch, mats[0], mats[1:]))
    return out


def featurize(cands: list[Candidate], base: dict, fit_rows: pd.DataFrame, others: list[pd.DataFrame]):
    """(prepare step, {block: fitted branch}, {block: [fit_rows X, *others X]}) for the blocks some
    candidate reads, and the plain baseline's (always: it is fitted beside the choice).

    In this process, one block after the other: with worker processes (measured at 85k rows) the
    texts going out and the matrices coming back cost more than the parallelism saved."""
    prep = make_prepare(base)
    kw = prep.kw_args
    docs = [prepare(df[["designation", "description"]], **kw) for df in (fit_rows, *others)]
    makers = {"words": word_branch, "title_chars": char_branch, "text_chars": text_char_branch}
    branches: dict[str, Any] = {PLAIN: word_branch(plain_params(base))}
    for c in cands:
        for b in c.blocks:
            if b not in branches:
                branches[b] = makers[b](c.params)
    fitted, matrices = {}, {}
    names = [n for n in (PLAIN, "words", "title_chars", "text_chars") if branches.get(n) is not None]
    if "words" in names and _counts_compatible(branches[PLAIN].steps[-1][1], branches["words"].steps[-1][1]):
        done = dict(zip((PLAIN, "words"), _fit_shared_words(branches[PLAIN], branches["words"], docs)))
    else:
        done = {}
    for name in names:
        branch, xs, rest = done[name] if name in done else _fit_block(branches[name], docs[0], docs[1:])
        fitted[name] = branch
        matrices[name] = [xs, *rest]
    prep.fit(fit_rows[["designation", "description"]].head(1))  # marks it fitted (input columns)
    return prep, fitted, matrices


def columns(matrices: dict, blocks: tuple[str, ...], i: int):
    """Row set i of `blocks` side by side; a combination of blocks is stacked once and kept in
    `matrices` (every candidate with the same blocks reuses it: stacking is not free)."""
    import scipy.sparse as sp

    if len(blocks) == 1:
        return matrices[blocks[0]][i]
    cached = matrices.setdefault(tuple(blocks), {})
    if i not in cached:
        cached[i] = sp.hstack([matrices[b][i] for b in blocks], format="csr")
    return cached[i]


# --- scoring -------------------------------------------------------------------------------------
def metric_scores(y_true, y_pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(y_true, y_pred))}


def _scaled(params: dict, factor: float) -> dict:
    """The settings for a fit on 1/factor**2 of the rows (see the module docstring)."""
    if factor == 1.0:
        return params
    if params["classifier"] == "sgd":
        return {**params, "alpha": float(params["alpha"]) * factor}
    return {**params, "C": float(params["C"]) * factor}


def _fit(params: dict, X, y):
    with warnings.catch_warnings():
        # SGD stops at max_iter by design (a time budget); its ConvergenceWarning is noise here.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*(Maximum number of iteration|failed to converge).*")
        return make_classifier(params).fit(X, y)


def rung_sizes(n: int) -> list[int]:
    """Row counts of the successive-halving rungs for n search rows (the last is n)."""
    k = 0
    while k < 2 and n / ETA ** (k + 1) >= MIN_RUNG_ROWS:
        k += 1
    return [int(math.ceil(n / ETA ** (k - i))) for i in range(k + 1)]


@dataclass
class SearchResult:
    chosen: Candidate
    classifier: Any            # unused (None): the chosen one is refitted on all fit rows
    validation_decision: np.ndarray  # the chosen one's out-of-sample decision values...
    candidates: list[Candidate]
    seconds: float
    classes: np.ndarray | None = None       # ...their columns' classes
    validation_labels: np.ndarray | None = None  # ...and the labels of their rows
    folds: int = 0             # k of k-fold cross-validation (0: the validation part)


def fold_of(productids, k: int) -> np.ndarray:
    """Each product's fold (0..k-1), by a hash of productid independent of the holdout's and the
    validation part's: stable as the catalogue grows."""
    h = dataset._splitmix64(np.asarray(productids, dtype=np.int64) ^ np.int64(0x2545F4914F6CDD1D))
    return ((h >> np.uint64(40)) % np.uint64(k)).astype(np.intp)


def _decision_in(clf, X, classes: np.ndarray) -> np.ndarray:
    """clf's decision values on X as columns of `classes` (a class its fold never saw: below
    every other value of its row, so it is never the argmax)."""
    d = np.asarray(clf.decision_function(X), dtype=np.float64)
    if d.ndim == 1:
        d = np.column_stack([-d, d])
    own = np.asarray(clf.classes_)
    if len(own) == len(classes) and (own == classes).all():
        return d
    out = np.empty((d.shape[0], len(classes)))
    out[:] = (d.min(axis=1) - 1.0)[:, None]
    out[:, np.searchsorted(classes, own)] = d
    return out


def cv_search(cands: list[Candidate], matrices: dict, y: np.ndarray, folds: np.ndarray, *, metric: str,
              max_seconds: float, clock: Callable[[], float] = time.perf_counter) -> SearchResult:
    """k-fold cross-validation of every candidate on the fit rows (features column 0 of
    `matrices`): its score is `metric` on the pooled out-of-fold predictions; the best wins
    (ties: earlier). Regularisation scaled by sqrt(k / (k - 1)) (each fit sees (k-1)/k of the
    rows, see _scaled). The chosen one's out-of-fold decision values are what calibration fits."""
    t0 = clock()
    k = int(folds.max()) + 1
    classes = np.unique(y)
    factor = math.sqrt(k / (k - 1))
    oof: dict[int, np.ndarray] = {}
    for c in cands:
        if clock() - t0 > max_seconds and oof:
            c.status = "skipped: TRAIN_SEARCH_SECONDS spent"
            continue
        X = columns(matrices, c.blocks, 0)
        t = clock()
        d = np.empty((len(y), len(classes)))
        for f in range(k):
            test = folds == f
            clf = _fit(_scaled(c.params, factor), X[~test], y[~test])
            d[test] = _decision_in(clf, X[test], classes)
        s = metric_scores(y, classes[d.argmax(axis=1)])
        c.rungs.append({"rows": len(y), "score": s[metric], "weighted_f1": s["weighted_f1"],
                        "seconds": clock() - t, "folds": k})
        c.status = "not chosen"
        oof[id(c)] = d
        log.info("cross-validation: %-32s %6d rows  %d folds  %s %.4f  (%.1fs)", c.name, len(y), k, metric,
                 s[metric], c.rungs[-1]["seconds"])
    chosen = sorted([c for c in cands if c.rungs], key=lambda c: -c.rungs[-1]["score"])[0]
    chosen.status = "chosen"
    return SearchResult(chosen, None, oof[id(chosen)], cands, clock() - t0, classes=classes, validation_labels=y,
                        folds=k)


def search(cands: list[Candidate], matrices: dict, y_search: np.ndarray, y_val: np.ndarray, *,
           metric: str, max_seconds: float, seed: int,
           clock: Callable[[], float] = time.perf_counter) -> SearchResult:
    """Successive halving over `cands`; the best on `metric` on validation wins (ties: earlier).

    The halving stops at the rung where one candidate would be left: that one is chosen, and its
    fit there gives calibration its decision values on the validation part (its regularisation
    scaled for that rung's rows; a fit on all search rows only to calibrate cost ~20% of an 85k
    training and changed no choice)."""
    t0 = clock()
    n = len(y_search)
    sizes = rung_sizes(n)
    order = np.random.default_rng(seed).permutation(n)
    alive = list(cands)
    decisions: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # validation decision values, classes
    last: list[Candidate] = []
    for r, size in enumerate(sizes):
        rows = np.sort(order[:size]) if size < n else None
        factor = math.sqrt(n / size)
        subsets: dict[tuple[str, ...], Any] = {}  # this rung's rows of each block combination
        for c in alive:
            if clock() - t0 > max_seconds and any(x.rungs for x in cands):
                if not c.rungs:
                    c.status = "skipped: TRAIN_SEARCH_SECONDS spent"
                continue
            t = clock()
            if c.blocks not in subsets:
                Xs = columns(matrices, c.blocks, 0)
                subsets[c.blocks] = Xs if rows is None else Xs[rows]
            clf = _fit(_scaled(c.params, factor), subsets[c.blocks], y_search if rows is None else y_search[rows])
            classes = np.asarray(clf.classes_)
            d = _decision_in(clf, columns(matrices, c.blocks, 1), classes)
            s = metric_scores(y_val, classes[d.argmax(axis=1)])
            decisions[id(c)] = (d, classes)
            c.rungs.append({"rows": size, "score": s[metric], "weighted_f1": s["weighted_f1"],
                            "seconds": clock() - t})
            log.info("search: %-32s %6d rows  validation %s %.4f  (%.1fs)", c.name, size, metric, s[metric],
                     c.rungs[-1]["seconds"])
        scored = [c for c in alive if c.rungs and c.rungs[-1]["rows"] == size]
        if not scored:
            break
        last = sorted(scored, key=lambda c: -c.rungs[-1]["score"])  # stable: ties keep priority
        keep = max(FINALISTS, len(scored) // ETA)
        if r == len(sizes) - 1 or keep <= 1 or clock() - t0 > max_seconds:
            break
        for c in last[keep:]:
            c.status = f"eliminated at {size} rows"
        alive = last[:keep]
    chosen = last[0]
    for c in last[1:]:
        c.status = f"not chosen at {chosen.rungs[-1]['rows']} rows"
    chosen.status = "chosen"
    d, classes = decisions[id(chosen)]
    return SearchResult(chosen, None, d, cands, clock() - t0, classes=classes, validation_labels=y_val)


# --- the whole build -------------------------------------------------------------------------------
@dataclass
class Built:
    model: Any                   # the servable, calibrated pipeline (chosen settings, all fit rows)
    chosen: Candidate
    result: SearchResult
    temperature: float
    epsilon: float
    parts: Parts
    holdout_features: Any        # the holdout through the chosen model's feature blocks
    baseline: dict[str, float]   # the plain baseline on the holdout: scores and seconds
    seconds: dict[str, float]    # features, search, final fit, baseline

    @property
    def fit_rows(self) -> pd.DataFrame:
        return self.parts.fit_rows

    @property
    def validation_rows(self) -> int:
        """Rows the choice was scored on: every fit row (out of fold) or the validation part."""
        return len(self.result.validation_labels) if self.result.folds else len(self.parts.validation)


def build(train_rows: pd.DataFrame, holdout: pd.DataFrame, *, base: dict[str, Any], pinned: dict[str, Any],
          validation_fraction: float, holdout_fraction: float, max_candidates: int, max_seconds: float,
          metric: str, clock: Callable[[], float] = time.perf_counter) -> Built:
    """Select, calibrate and fit the model; fit and score the plain baseline (module docstring)."""
    import scipy.sparse as sp

    from .calibration import TemperatureScaled, fit_calibration
    from .features import compact_vocabularies

    seed = int(base["random_state"])
    parts = split_parts(train_rows, validation_fraction=validation_fraction, holdout_fraction=holdout_fraction,
                        max_per_class=base["max_per_class"], seed=seed)
    small = len(parts.validation) < CV_BELOW_VALIDATION_ROWS
    cands = candidates(base, pinned, max_candidates, small=small)
    y_hold = holdout["prdtypecode"].to_numpy()
    t = clock()
    if small:
        # k-fold over all fit rows: features fitted once on them (what the final fit uses too)
        fit_rows = parts.fit_rows.reset_index(drop=True)
        log.info("%d fit rows (%d-fold cross-validation: the validation part would have %d rows), holdout %d",
                 len(fit_rows), CV_FOLDS, len(parts.validation), len(holdout))
        prep, fitted, matrices = featurize(cands, base, fit_rows, [holdout])
        hold_i = 1
    else:
        log.info("search part %d rows, validation part %d rows (%d of them added to the final fit), holdout %d",
                 len(parts.search), len(parts.validation), len(parts.validation_fit), len(holdout))
        prep, fitted, matrices = featurize(cands, base, parts.search, [parts.validation, holdout])
        hold_i = 2
    seconds = {"features": clock() - t}
    log.info("searching %d candidates (%s)", len(cands), ", ".join(c.name for c in cands))

    if small:
        y_fit = fit_rows["prdtypecode"].to_numpy()

        def stacked(blocks: tuple[str, ...]):
            return columns(matrices, blocks, 0)
    else:
        y_search = parts.search["prdtypecode"].to_numpy()
        y_val = parts.validation["prdtypecode"].to_numpy()
        vf = parts.validation_fit
        y_fit = np.concatenate([y_search, y_val[vf]])

        def stacked(blocks: tuple[str, ...]):
            return sp.vstack([columns(matrices, blocks, 0), columns(matrices, blocks, 1)[vf]], format="csr")

    # The plain baseline does not depend on the search: fitted in a thread beside it (liblinear
    # and SGD release the GIL, so on two cores the baseline costs little wall time).
    from concurrent.futures import ThreadPoolExecutor

    plain = plain_params(base)
    pool = ThreadPoolExecutor(1, thread_name_prefix="baseline")
    t_base = clock()
    # (not _fit: warnings.catch_warnings is process-wide, not for two threads at once)
    baseline_future = pool.submit(lambda: (make_classifier(plain).fit(stacked((PLAIN,)), y_fit), clock() - t_base))
    if small:
        result = cv_search(cands, matrices, y_fit, fold_of(fit_rows["productid"].to_numpy(), CV_FOLDS),
                           metric=metric, max_seconds=max_seconds, clock=clock)
        cal = (result.validation_decision, y_fit, result.classes)
    else:
        result = search(cands, matrices, y_search, y_val, metric=metric, max_seconds=max_seconds, seed=seed,
                        clock=clock)
        cal = (result.validation_decision, y_val, result.classes)
    seconds["search"] = result.seconds
    chosen = result.chosen
    temperature, epsilon = fit_calibration(*cal)
    log.info("chosen: %s (%s %s %.4f); calibration T %.4g, epsilon %.4g", chosen.name,
             f"{result.folds}-fold" if result.folds else "validation", metric, chosen.rungs[-1]["score"],
             temperature, epsilon)

    t = clock()
    final = _fit(chosen.params, stacked(chosen.blocks), y_fit)
    seconds["final_fit"] = clock() - t
    branches = [("words" if b == PLAIN else b, fitted[b]) for b in chosen.blocks]
    model = assemble(prep, branches, TemperatureScaled(final, temperature, epsilon))
    compact_vocabularies(model)

    t = clock()
    baseline_clf, baseline_seconds = baseline_future.result()  # the search chose plain: the same model
    pool.shutdown()
    baseline = metric_scores(y_hold, baseline_clf.predict(columns(matrices, (PLAIN,), hold_i)))
    seconds["baseline_wait"] = clock() - t
    seconds["baseline"] = baseline["seconds"] = baseline_seconds
    log.info("plain baseline: holdout weighted F1 %.4f", baseline["weighted_f1"])
    holdout_features = columns(matrices, chosen.blocks, hold_i)
    return Built(model, chosen, result, temperature, epsilon, parts, holdout_features, baseline, seconds)
