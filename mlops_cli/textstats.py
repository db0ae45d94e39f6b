"""Cheap per-text features for data-drift monitoring, shared by training (the reference) and
serving (computed off the request path when a prediction is logged), so both sides measure
exactly the same thing.
"""

from __future__ import annotations

import re
from typing import Iterable

from .features import clean_text

TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")

# A handful of very frequent function words per language: enough to tell the catalogue's
# languages apart on a title + description, at a fraction of a language detector's cost.
_LANG_WORDS = {
    "fr": {"le", "la", "les", "des", "et", "pour", "avec", "une", "est", "du", "en", "sur", "dans", "au"},
    "en": {"the", "and", "for", "with", "of", "is", "to", "this", "in", "on", "your", "it", "you"},
    "de": {"der", "die", "das", "und", "mit", "für", "ist", "ein", "eine", "nicht", "zu", "den", "von"},
    "es_it": {"el", "los", "las", "con", "para", "il", "di", "che", "per", "della", "una", "y", "lo"},
}
LANGS = ("fr", "en", "de", "es_it", "cjk", "other")
SCRIPTS = ("latin", "cjk", "cyrillic", "other")


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(clean_text(text))


def script_of(text: str) -> str:
    """The dominant writing system of the letters in text."""
    latin = cjk = cyr = other = 0
    for ch in text:
        if not ch.isalpha():
            continue
        o = ord(ch)
        if o < 0x250:
            latin += 1
        elif 0x3040 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF:
            cjk += 1
        elif 0x400 <= o <= 0x4FF:
            cyr += 1
        else:
            other += 1
    best = max((latin, "latin"), (cjk, "cjk"), (cyr, "cyrillic"), (other, "other"))
    return best[1] if best[0] else "other"


def language_of(toks: Iterable[str], script: str) -> str:
    if script == "cjk":
        return "cjk"
    counts = {lang: 0 for lang in _LANG_WORDS}
    for t in toks:
        for lang, words in _LANG_WORDS.items():
            if t in words:
                counts[lang] += 1
    lang, n = max(counts.items(), key=lambda kv: kv[1])
    return lang if n else "other"


def row_features(designation: str, description: str | None, vocabulary: set[str] | None) -> dict:
    """n_tokens, n_oov (tokens not in the model's vocabulary), script and language of a product."""
    text = f"{designation or ''} {description or ''}"
    toks = tokens(text)
    script = script_of(text)
    n_oov = sum(1 for t in toks if t not in vocabulary) if vocabulary is not None else None
    return {"n_tokens": len(toks), "n_oov": n_oov, "script": script, "lang": language_of(toks, script)}


def model_vocabulary(model) -> set[str] | None:
    """The single-word terms of the model's word TF-IDF (None if the model has none)."""
    try:
        words = model.named_steps["features"].transformer_list[0][1][-1]
        return {t for t in words.vocabulary_ if " " not in t}
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
