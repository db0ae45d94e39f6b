"""Text preparation and the scikit-learn model for Rakuten product texts.

Designed for the real, messy data (DATA_FACTS in docs/DATA.md): HTML tags and entities in
descriptions, some mojibake, ~35% empty descriptions, French/English/German/Japanese text, titles
carrying brands, volume numbers and model codes. Word n-grams on title + description carry the topic; character
n-grams on the title catch brands, codes and misspellings.

The functions used inside the Pipeline are module-level so the fitted model pickles, and the
serving process needs nothing but this package to load it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

import ftfy
import numpy as np
import pandas as pd

# Mojibake (UTF-8 read as cp1252 or Latin-1: "Ã©" for "é") is repaired by ftfy, which undoes only
# sequences that decode back to valid UTF-8 and leaves correct accented text alone. It runs only
# on text holding one of the markers such sequences start with (rare in the catalogue).
_MOJIBAKE_MARKERS = ("Ã", "Â", "â€", "â‚")
# A tag starts with a letter, / or ! after "<": "< 2 kg" and "&lt; 3 ans" (unescaped first) are text.
_TAG_RE = re.compile(r"</?[A-Za-z!][^<>]*>")
_SPACE_RE = re.compile(r"\s+")

DEFAULT_PARAMS: dict[str, Any] = {
    "fold_accents": False,       # keep accents: French words differ by them (livré / livre)
    "word_ngram_max": 2,
    "word_min_df": 2,
    "word_max_features": 300_000,
    "char_ngram_min": 2,
    "char_ngram_max": 5,
    "char_max_features": 200_000,
    # char_wb n-grams over title + description: misspellings, inflections and compounds across
    # languages; costly on large data (the search tries them where the data is small, see
    # selection.py). 0: no such block (the default pipeline has none).
    "text_char_ngram_min": 3,
    "text_char_ngram_max": 5,
    "text_char_max_features": 0,
    "description_chars": 1000,   # long descriptions add noise and time beyond this
    # (char_max_features=0: no title character block, words only)
    "classifier": "sgd",         # sgd (modified Huber) | linearsvc | logreg
    "alpha": 2e-5,               # sgd: L2 strength per row (larger: stronger regularisation)
    "C": 1.0,                    # linearsvc / logreg: inverse strength (smaller: stronger)
    "max_iter": 12,              # SGD epochs at most (it stops when converged, ~6 on 85k rows)
    "class_weight": "balanced",  # or "none"
    "max_per_class": None,       # None: settings.max_per_class
    "random_state": 42,
    "fit_jobs": 2,               # >1: word and char features fitted in parallel (serving stays serial)
}


def clean_text(text: Any, fold_accents: bool = False) -> str:
    """HTML unescape, strip tags, repair common mojibake, compose accents (NFC), lowercase,
    collapse spaces."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    s = str(text)
    if "&" in s:
        s = html.unescape(html.unescape(s))  # some descriptions are escaped twice (&amp;eacute;)
    if "<" in s:
        s = _TAG_RE.sub(" ", s)
    if any(marker in s for marker in _MOJIBAKE_MARKERS):
        s = ftfy.fix_encoding(s)
    if not s.isascii():
        # one spelling per word: "é" typed as e + U+0301 (macOS file names, some keyboards and
        # exports) is the é the model learned, not another token
        s = unicodedata.normalize("NFC", s)
    s = s.lower()
    if fold_accents:
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    return _SPACE_RE.sub(" ", s).strip()


def has_letter_or_digit(text: Any) -> bool:
    """Some of what the model reads of the text (clean_text: tags and entities gone) is a letter
    or a digit. A title must be, to be learned from: `mlops load` rejects the others, training
    leaves out such logged titles, the labelling queue does not offer them."""
    return any(c.isalnum() for c in clean_text(text))


def as_frame(X) -> pd.DataFrame:
    """Accept a DataFrame, a list of dicts, or a list of titles; give designation + description."""
    if isinstance(X, pd.DataFrame):
        df = X
    elif len(X) and isinstance(X[0], str):
        df = pd.DataFrame({"designation": list(X)})
    else:
        df = pd.DataFrame(list(X))
    if "designation" not in df.columns:
        raise ValueError("input needs a 'designation' column (the product title)")
    if "description" not in df.columns:
        df = df.assign(description="")
    return df


def prepare(X, fold_accents: bool = False, description_chars: int = 2000) -> pd.DataFrame:
    """Two clean text columns: `title` and `text` (title + description)."""
    df = as_frame(X)
    title = [clean_text(t, fold_accents) for t in df["designation"].tolist()]
    desc = [clean_text(d, fold_accents)[:description_chars] for d in df["description"].tolist()]
    return pd.DataFrame({"title": title, "text": [f"{t} {d}".strip() for t, d in zip(title, desc)]})


def pick_title(df: pd.DataFrame) -> list[str]:
    return df["title"].tolist()  # a list: pandas 3 string columns are Arrow-backed


def pick_text(df: pd.DataFrame) -> list[str]:
    return df["text"].tolist()


class CharWbNgrams:
    """scikit-learn's analyzer="char_wb" (lowercase, then the n-grams of each space-padded word,
    a word shorter than n counted once), with each word's n-grams cached: titles repeat the same
    words, and the n-grams were most of the time spent fitting and applying the title features.
    The cache is bounded and not pickled."""

    CACHE_WORDS = 200_000

    def __init__(self, min_n: int, max_n: int):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"char n-gram range ({min_n}, {max_n}) is not 1 <= min <= max")
        self.min_n, self.max_n = min_n, max_n
        self._cache: dict[str, tuple[str, ...]] = {}

    def __getstate__(self) -> dict:
        return {"min_n": self.min_n, "max_n": self.max_n}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["min_n"], state["max_n"])

    def __repr__(self) -> str:
        return f"CharWbNgrams({self.min_n}, {self.max_n})"

    def _word(self, word: str) -> tuple[str, ...]:
        w = f" {word} "
        grams: list[str] = []
        for n in range(self.min_n, self.max_n + 1):
            if n >= len(w):
                grams.append(w)  # as scikit-learn: the whole padded word, once, then stop
                break
            grams += [w[i:i + n] for i in range(len(w) - n + 1)]
        return tuple(grams)

    def __call__(self, doc: str) -> list[str]:
        cache = self._cache
        out: list[str] = []
        for word in doc.lower().split():
            grams = cache.get(word)
            if grams is None:
                grams = self._word(word)
                if len(cache) >= self.CACHE_WORDS:
                    cache.clear()
                cache[word] = grams
            out += grams
        return out


# The plain baseline every training is measured against (the model anyone would try first):
# word 1-2 gram TF-IDF (sublinear, no vocabulary cap, min_df 1) on the same prepared text, and
# LinearSVC with its defaults. Fitted beside each challenger on the same rows and holdout.
PLAIN_PARAMS: dict[str, Any] = {
    "word_ngram_max": 2, "word_min_df": 1, "word_max_features": 0, "char_max_features": 0,
    "classifier": "linearsvc", "C": 1.0, "class_weight": "none",
}
FEATURE_KEYS = ("word_ngram_max", "word_min_df", "word_max_features", "char_ngram_min", "char_ngram_max",
                "char_max_features", "text_char_ngram_min", "text_char_ngram_max", "text_char_max_features")
PREPARE_KEYS = ("fold_accents", "description_chars")
CLASSIFIERS = ("sgd", "linearsvc", "logreg")


def _cap(value) -> int | None:
    """A max_features setting: 0 (or None) means no cap."""
    return int(value) if value else None


def word_branch(p: dict[str, Any]):
    """Word 1..n-gram TF-IDF on the prepared `text` column (title + description)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    word = TfidfVectorizer(
        ngram_range=(1, int(p["word_ngram_max"])), min_df=int(p["word_min_df"]),
        max_features=_cap(p["word_max_features"]), sublinear_tf=True, dtype=np.float32,
        token_pattern=r"(?u)\b\w\w+\b|\b\d\b",
    )
    return make_pipeline(FunctionTransformer(pick_text), word)


def char_branch(p: dict[str, Any]):
    """char_wb n-gram TF-IDF on the prepared `title` column (None when char_max_features is 0)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    if not p["char_max_features"]:
        return None
    char = TfidfVectorizer(
        analyzer=CharWbNgrams(int(p["char_ngram_min"]), int(p["char_ngram_max"])),
        min_df=2, max_features=_cap(p["char_max_features"]), sublinear_tf=True, dtype=np.float32,
    )
    return make_pipeline(FunctionTransformer(pick_title), char)


def text_char_branch(p: dict[str, Any]):
    """char_wb n-gram TF-IDF on the prepared `text` column (None when text_char_max_features is 0)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    if not p.get("text_char_max_features"):
        return None
    char = TfidfVectorizer(
        analyzer=CharWbNgrams(int(p["text_char_ngram_min"]), int(p["text_char_ngram_max"])),
        min_df=2, max_features=_cap(p["text_char_max_features"]), sublinear_tf=True, dtype=np.float32,
    )
    return make_pipeline(FunctionTransformer(pick_text), char)


def make_prepare(p: dict[str, Any]):
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(
        prepare, kw_args={"fold_accents": bool(p["fold_accents"]),
                          "description_chars": int(p["description_chars"])},
    )


def make_classifier(p: dict[str, Any]):
    """The (unfitted) linear classifier of a parameter set."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.svm import LinearSVC

    class_weight = None if p["class_weight"] in (None, "none") else p["class_weight"]
    if p["classifier"] == "sgd":
        # Stops when converged (training loss no better by tol for 3 epochs), at most max_iter:
        # measured on 85k rows, ~6 epochs instead of 12 at the same weighted F1 (+-0.001).
        return SGDClassifier(loss="modified_huber", alpha=float(p["alpha"]), max_iter=int(p["max_iter"]),
                             tol=1e-3, n_iter_no_change=3, class_weight=class_weight,
                             random_state=int(p["random_state"]), n_jobs=-1)
    if p["classifier"] == "linearsvc":
        return LinearSVC(C=float(p["C"]), class_weight=class_weight, random_state=int(p["random_state"]))
    if p["classifier"] == "logreg":
        return LogisticRegression(C=float(p["C"]), max_iter=int(p["max_iter"]) * 10, class_weight=class_weight)
    raise ValueError(f"unknown classifier {p['classifier']!r}: use {', '.join(CLASSIFIERS)}")


def assemble(prep, branches: list[tuple[str, Any]], classifier, n_jobs: int | None = None):
    """prepare -> FeatureUnion(branches) -> classifier, from fitted or unfitted parts."""
    from sklearn.pipeline import FeatureUnion, Pipeline

    return Pipeline([("prepare", prep), ("features", FeatureUnion(branches, n_jobs=n_jobs)),
                     ("classifier", classifier)])


def build_pipeline(params: dict[str, Any]):
    """The Pipeline: prepare -> [word TF-IDF on text | char TF-IDF on title | char TF-IDF on text,
    when text_char_max_features] -> linear classifier.

    With `temperature` (and `epsilon`) in params the classifier is wrapped in
    calibration.TemperatureScaled (calibrated probabilities); a linearsvc has none without it.
    """
    p = {**DEFAULT_PARAMS, **params}
    branches = [("words", word_branch(p))]
    char = char_branch(p)
    if char is not None:
        branches.append(("title_chars", char))
    text_char = text_char_branch(p)
    if text_char is not None:
        branches.append(("text_chars", text_char))
    clf = make_classifier(p)
    if p.get("temperature") is not None:
        from .calibration import TemperatureScaled

        clf = TemperatureScaled(clf, float(p["temperature"]), float(p.get("epsilon") or 0.0))
    jobs = int(p["fit_jobs"]) if int(p["fit_jobs"]) > 1 and len(branches) > 1 else None
    return assemble(make_prepare(p), branches, clf, n_jobs=jobs)


def compact_vocabularies(model) -> None:
    """Fitted TF-IDF vocabularies map terms to numpy integers; as Python ints the model pickles
    ~15x faster (1.7 s -> 0.1 s for 300k terms) and 10% smaller. Transforms are unchanged."""
    for _name, branch in getattr(model.named_steps.get("features"), "transformer_list", []):
        vec = branch.steps[-1][1] if hasattr(branch, "steps") else branch
        vocab = getattr(vec, "vocabulary_", None)
        if vocab:
            vec.vocabulary_ = {term: int(i) for term, i in vocab.items()}


def parse_param(text: str) -> tuple[str, Any]:
    """'key=value' from --param, typed like the default (bool/int/float/str); unknown keys refused."""
    if "=" not in text:
        raise ValueError(f"--param {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in DEFAULT_PARAMS:
        raise ValueError(f"--param {key!r}: unknown parameter (known: {', '.join(sorted(DEFAULT_PARAMS))})")
    default = DEFAULT_PARAMS[key]
    try:
        if isinstance(default, bool):
            value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            value = int(raw)
        elif isinstance(default, float):
            value = float(raw)
        elif default is None:
            value = None if raw.strip().lower() in ("", "none") else int(raw)
        else:
            value = raw
    except ValueError:
        raise ValueError(f"--param {key}={raw!r}: expected a {type(default).__name__}") from None
    choices = {"classifier": CLASSIFIERS, "class_weight": ("balanced", "none")}.get(key)
    if choices and value not in choices:
        raise ValueError(f"--param {key}={raw!r}: expected one of {', '.join(choices)}")
    return key, value
