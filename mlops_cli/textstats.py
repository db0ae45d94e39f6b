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


_WORD_LANGS: dict[str, tuple[str, ...]] = {}
for _lang, _words in _LANG_WORDS.items():
    for _w in _words:
        _WORD_LANGS[_w] = _WORD_LANGS.get(_w, ()) + (_lang,)
# The letters below U+0250 (what str.isalpha says there), and everything below U+0250.
_LATIN_LETTER_RE = re.compile("[A-Za-z\u00aa\u00b5\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]")
_BELOW_0250_RE = re.compile("[\x00-\u024f]+")


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(clean_text(text))


def script_of(text: str) -> str:
    """The dominant writing system of the letters in text."""
    # This runs for every prediction: regexes (C loops) for the common all-Latin text, a
    # character loop only over the rest.
    rest = _BELOW_0250_RE.sub("", text)
    cjk = cyr = other = 0
    for ch in rest:
        if not ch.isalpha():
            continue
        o = ord(ch)
        if 0x3040 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF:
            cjk += 1
        elif 0x400 <= o <= 0x4FF:
            cyr += 1
        else:
            other += 1
    if not (cjk or cyr or other):
        return "latin" if _LATIN_LETTER_RE.search(text) else "other"
    latin = len(_LATIN_LETTER_RE.findall(text))
    best = max((latin, "latin"), (cjk, "cjk"), (cyr, "cyrillic"), (other, "other"))
    return best[1] if best[0] else "other"


def language_of(toks: Iterable[str], script: str) -> str:
    if script == "cjk":
        return "cjk"
    counts = dict.fromkeys(_LANG_WORDS, 0)
    for langs in filter(None, map(_WORD_LANGS.get, toks)):
        for lang in langs:
            counts[lang] += 1
    lang, n = max(counts.items(), key=lambda kv: kv[1])
    return lang if n else "other"


def row_features(designation: str, description: str | None, vocabulary: set[str] | None) -> dict:
    """n_tokens, n_oov (tokens not in the model's vocabulary), script and language of a product."""
    return clean_row_features(clean_text(designation), clean_text(description), vocabulary)


def clean_row_features(title: str, description: str, vocabulary: set[str] | None) -> dict:
    """row_features of a title and description already through features.clean_text (serving has
    them from the prediction)."""
    text = f"{title} {description}"
    toks = TOKEN_RE.findall(text)
    script = script_of(text)
    n_oov = len(toks) - sum(map(vocabulary.__contains__, toks)) if vocabulary is not None else None
    return {"n_tokens": len(toks), "n_oov": n_oov, "script": script, "lang": language_of(toks, script)}


def model_vocabulary(model) -> set[str] | None:
    """The single-word terms of the model's word TF-IDF (None if the model has none)."""
    try:
        words = model.named_steps["features"].transformer_list[0][1][-1]
        return {t for t in words.vocabulary_ if " " not in t}
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
