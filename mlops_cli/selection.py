"""Model selection, the plain baseline and calibration: what `mlops train` builds (steps/train.py
logs and registers it).

1. Rows. The training rows (never the holdout) are split by productid hash into a search part and
   a validation part (VALIDATION_FRACTION of them; dataset.validation_mask: disjoint from the
   holdout, stable as the catalogue grows). Each part is balanced with its share of the
   per-class cap; together they are the fit rows.
2. Features, once. prepare() cleans the texts once; three TF-IDF blocks are fitted on the search
   part -- words and title characters (the pipeline's, with any pinned feature setting) and the
   plain baseline's words -- and applied to the validation rows and the holdout, in parallel
   processes (FIT_JOBS). Features are the costly part: every candidate reuses these matrices.
3. Search. Candidates differ in classifier settings (regularisation strength first, then class
   weighting, feature blocks, family: SGD modified Huber, LinearSVC, logistic regression) and
   include the plain baseline itself, so the choice is never worse on validation than plain.
   (Logistic regression scores like LinearSVC here at ten times the time: it is not searched by
   default; --param classifier=logreg pins it.)
   `--param k=v` pins a setting in every candidate: it is not searched (a setting only one
   family uses, alpha for SGD, C for LinearSVC and logistic regression, also pins the family).
   Successive halving: on large data all candidates are first fitted on a third (or a ninth) of
   the search rows, the best third go on to three times as many rows, the best two finish on all
   of them. The regularisation of a candidate fitted on n of N rows is scaled by sqrt(N/n)
   (alpha up, C down... in effect per row): its optimum moves that way with the row count (~4k
   real rows: alpha 2e-4..8e-4; 85k: 2e-5 suffices), so small rungs rank candidates the way
   the full size would. Budget: TRAIN_SEARCH_MAX_CANDIDATES and TRAIN_SEARCH_SECONDS (no new
   fit starts past it). The pick: the best PROMOTION_METRIC on the validation part.
4. Calibration. The chosen candidate's fit on the search part gives decision values on the
   validation part; a temperature T and a noise floor epsilon are fitted there
   (calibration.fit_calibration).
5. Final fit. The chosen classifier is refitted on all fit rows (search + validation parts, the
   vocabularies those of the search part), wrapped with T, assembled into the servable pipeline.
   The plain baseline (word 1-2 gram TF-IDF + LinearSVC defaults, features.PLAIN_PARAMS) is fitted
   on the same rows the same way and scored on the same holdout.
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
from .errors import MlopsError
from .features import DEFAULT_PARAMS, PLAIN_PARAMS, assemble, char_branch, make_classifier, make_prepare, \
    prepare, word_branch

log = logging.getLogger(__name__)

PLAIN = "plain"
BLOCK_NAMES = ("words", "title_chars", PLAIN)
# Settings only some classifier families use: pinning one pins the family too.
FAMILY_KEYS = {"alpha": ("sgd",), "C": ("linearsvc", "logreg")}
# Settings a candidate may vary (what its row in the search table shows).
SHOWN = ("classifier", "alpha", "C", "class_weight", "features")

MIN_RUNG_ROWS = 3000   # successive halving only when the first rung still has this many rows
ETA = 3                # rows x3 and candidates /3 from one rung to the next
FINALISTS = 2          # candidates fitted on all search rows


def _sgd(alpha: float, class_weight: str = "balanced") -> dict:
    return {"classifier": "sgd", "alpha": alpha, "class_weight": class_weight}


def _svc(c: float, class_weight: str = "none") -> dict:
    return {"classifier": "linearsvc", "C": c, "class_weight": class_weight}


# In priority order (the budget keeps the first ones): regularisation strength first, on a log
# scale around what small real data wants, then class weighting, feature blocks, families.
GRID: tuple[tuple[dict, tuple[str, ...]], ...] = (
    *((_sgd(a), ("words", "title_chars")) for a in (6e-4, 2e-4, 2e-3, 6e-5, 6e-3, 2e-5)),
    *((_svc(c), ("words", "title_chars")) for c in (0.3, 0.1, 1.0)),
    (_svc(0.3, "balanced"), ("words", "title_chars")),
    (_sgd(6e-4, "none"), ("words", "title_chars")),
    ({**_sgd(6e-4), "char_max_features": 0}, ("words",)),
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
    words_only = " words-only" if blocks == ("words",) else ""
    return f"{params['classifier']} {strength}{cw}{words_only}"


def plain_params(base: dict) -> dict:
    """The plain baseline's settings: the preparation (and seeds) of `base`, PLAIN_PARAMS' model."""
    return {**base, **PLAIN_PARAMS}


def candidates(base: dict[str, Any], pinned: dict[str, Any], limit: int) -> list[Candidate]:
    """The search space with `pinned` applied to every candidate, deduplicated, at most `limit`.

    base: DEFAULT_PARAMS with the pins (and max_per_class resolved). The plain baseline comes
    first, unless a pin contradicts it (then it is not the plain model any more).
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
    for overrides, blocks in GRID:
        params = {**base, **overrides, **pinned}
        if not params["char_max_features"]:
            blocks = ("words",)
        add(params, blocks)
    if not out:  # every grid point contradicted the pins: the pinned configuration alone
        params = {**base, **pinned}
        add(params, ("words", "title_chars") if params["char_max_features"] else ("words",))
    return out


# --- rows ----------------------------------------------------------------------------------------
@dataclass
class Parts:
    search: pd.DataFrame        # the search part's fit rows (balanced)
    validation: pd.DataFrame    # every validation row (natural class mix: what is scored)
    validation_fit: np.ndarray  # positions in `validation` of the rows the final fit adds
    search_rows_before_balancing: int

    @property
    def fit_rows(self) -> pd.DataFrame:
        return pd.concat([self.search, self.validation.iloc[self.validation_fit]])


def split_parts(train_rows: pd.DataFrame, *, validation_fraction: float, holdout_fraction: float,
                max_per_class: int | None, seed: int) -> Parts:
    search, validation = dataset.split_validation(train_rows, validation_fraction, holdout_fraction)
    if len(validation) == 0 or search["prdtypecode"].nunique() < 2:
        raise MlopsError(
            f"Too few training rows ({len(train_rows)}) for a validation part of {validation_fraction:.0%}: "
            "load more products before training.")
    cap_search = cap_val = None
    if max_per_class:
        cap_search = max(1, math.ceil(max_per_class * len(search) / len(train_rows)))
        cap_val = max(1, max_per_class - cap_search)
    search_fit = dataset.balanced(search, cap_search, seed=seed)
    validation = validation.reset_index(drop=True)
    val_fit = dataset.balanced(validation.assign(_pos=np.arange(len(validation))), cap_val, seed=seed)
    return Parts(search_fit, validation, np.sort(val_fit["_pos"].to_numpy()), len(search))


# --- features ------------------------------------------------------------------------------------
def _fit_block(branch, search_docs: pd.DataFrame, others: list[pd.DataFrame]):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        fitted = branch.fit_transform(search_docs)
        return branch, fitted, [branch.transform(o) for o in others]


def featurize(base: dict, parts: Parts, holdout: pd.DataFrame, jobs: int):
    """(prepare step, {block: fitted branch}, {block: [search X, validation X, holdout X]})."""
    from joblib import Parallel, delayed

    prep = make_prepare(base)
    kw = prep.kw_args
    docs = [prepare(df[["designation", "description"]], **kw) for df in (parts.search, parts.validation, holdout)]
    branches = {"words": word_branch(base), "title_chars": char_branch(base),
                PLAIN: word_branch(plain_params(base))}
    branches = {k: b for k, b in branches.items() if b is not None}
    names = list(branches)
    if jobs > 1:
        done = Parallel(n_jobs=min(jobs, len(names)))(
            delayed(_fit_block)(branches[n], docs[0], docs[1:]) for n in names)
    else:
        done = [_fit_block(branches[n], docs[0], docs[1:]) for n in names]
    fitted, matrices = {}, {}
    for name, (branch, xs, others) in zip(names, done):
        fitted[name] = branch
        matrices[name] = [xs, *others]
    prep.fit(parts.search[["designation", "description"]].head(1))  # marks it fitted (input columns)
    return prep, fitted, matrices


def columns(matrices: dict, blocks: tuple[str, ...], i: int):
    import scipy.sparse as sp

    parts = [matrices[b][i] for b in blocks]
    return parts[0] if len(parts) == 1 else sp.hstack(parts, format="csr")


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
    classifier: Any            # the chosen one fitted on every search row
    validation_decision: np.ndarray
    candidates: list[Candidate]
    seconds: float


def search(cands: list[Candidate], matrices: dict, y_search: np.ndarray, y_val: np.ndarray, *,
           metric: str, max_seconds: float, seed: int,
           clock: Callable[[], float] = time.perf_counter) -> SearchResult:
    """Successive halving over `cands`; the best on `metric` on validation wins (ties: earlier)."""
    t0 = clock()
    n = len(y_search)
    sizes = rung_sizes(n)
    order = np.random.default_rng(seed).permutation(n)
    alive = list(cands)
    fitted_full: dict[int, Any] = {}
    for r, size in enumerate(sizes):
        rows = np.sort(order[:size]) if size < n else None
        factor = math.sqrt(n / size)
        for c in alive:
            if clock() - t0 > max_seconds and any(x.rungs for x in cands):
                if not c.rungs:
                    c.status = "skipped: TRAIN_SEARCH_SECONDS spent"
                continue
            Xs = columns(matrices, c.blocks, 0)
            t = clock()
            clf = _fit(_scaled(c.params, factor), Xs if rows is None else Xs[rows],
                       y_search if rows is None else y_search[rows])
            pred = clf.predict(columns(matrices, c.blocks, 1))
            s = metric_scores(y_val, pred)
            c.rungs.append({"rows": size, "score": s[metric], "weighted_f1": s["weighted_f1"],
                            "seconds": clock() - t})
            if rows is None:
                fitted_full[id(c)] = clf
            log.info("search: %-32s %6d rows  validation %s %.4f  (%.1fs)", c.name, size, metric, s[metric],
                     c.rungs[-1]["seconds"])
        scored = [c for c in alive if c.rungs and c.rungs[-1]["rows"] == size]
        if not scored:
            break
        keep = FINALISTS if r == len(sizes) - 2 else max(FINALISTS, math.ceil(len(scored) / ETA))
        ranked = sorted(scored, key=lambda c: -c.rungs[-1]["score"])  # stable: ties keep priority
        if r < len(sizes) - 1:
            for c in ranked[keep:]:
                c.status = f"eliminated at {size} rows"
        alive = ranked[:keep]
        if clock() - t0 > max_seconds:
            break
    best_rows = max(c.rungs[-1]["rows"] for c in cands if c.rungs)
    finalists = [c for c in cands if c.rungs and c.rungs[-1]["rows"] == best_rows]
    chosen = sorted(finalists, key=lambda c: -c.rungs[-1]["score"])[0]
    for c in finalists:
        if c is not chosen:
            c.status = "not chosen" if best_rows == n else f"not chosen at {best_rows} rows (budget)"
    clf = fitted_full.get(id(chosen))
    if clf is None:  # the budget stopped the search early: calibration needs a fit on all search rows
        clf = _fit(chosen.params, columns(matrices, chosen.blocks, 0), y_search)
    chosen.status = "chosen"
    return SearchResult(chosen, clf, np.asarray(clf.decision_function(columns(matrices, chosen.blocks, 1))),
                        cands, clock() - t0)


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
    log.info("search part %d rows, validation part %d rows (%d of them added to the final fit), holdout %d",
             len(parts.search), len(parts.validation), len(parts.validation_fit), len(holdout))
    t = clock()
    prep, fitted, matrices = featurize(base, parts, holdout, int(base["fit_jobs"]))
    seconds = {"features": clock() - t}
    y_search = parts.search["prdtypecode"].to_numpy()
    y_val = parts.validation["prdtypecode"].to_numpy()

    cands = candidates(base, pinned, max_candidates)
    log.info("searching %d candidates (%s) on %d rows", len(cands), ", ".join(c.name for c in cands), len(y_search))
    result = search(cands, matrices, y_search, y_val, metric=metric, max_seconds=max_seconds, seed=seed,
                    clock=clock)
    seconds["search"] = result.seconds
    chosen = result.chosen
    temperature, epsilon = fit_calibration(result.validation_decision, y_val, result.classifier.classes_)
    log.info("chosen: %s (validation %s %.4f); calibration T %.4g, epsilon %.4g", chosen.name, metric,
             chosen.rungs[-1]["score"], temperature, epsilon)

    vf = parts.validation_fit
    y_fit = np.concatenate([y_search, y_val[vf]])

    def stacked(blocks: tuple[str, ...]):
        return sp.vstack([columns(matrices, blocks, 0), columns(matrices, blocks, 1)[vf]], format="csr")

    t = clock()
    final = _fit(chosen.params, stacked(chosen.blocks), y_fit)
    seconds["final_fit"] = clock() - t
    branches = [("words" if b == PLAIN else b, fitted[b]) for b in chosen.blocks]
    model = assemble(prep, branches, TemperatureScaled(final, temperature, epsilon))
    compact_vocabularies(model)

    t = clock()
    plain = plain_params(base)
    if chosen.blocks == (PLAIN,) and chosen.params == plain:
        baseline_clf = final  # the search chose the plain baseline itself
    else:
        baseline_clf = _fit(plain, stacked((PLAIN,)), y_fit)
    y_hold = holdout["prdtypecode"].to_numpy()
    baseline = metric_scores(y_hold, baseline_clf.predict(columns(matrices, (PLAIN,), 2)))
    seconds["baseline"] = baseline["seconds"] = clock() - t
    log.info("plain baseline: holdout weighted F1 %.4f", baseline["weighted_f1"])
    holdout_features = columns(matrices, chosen.blocks, 2)
    return Built(model, chosen, result, temperature, epsilon, parts, holdout_features, baseline, seconds)
