"""Offline scoring of a CSV in the catalogue's X format, and export of the inference log.

`predict_file` reads the real X layout (an unnamed index column, then designation,
description, productid, imageid; imageid optional), in chunks, scores every row with the
champion (or a given version) and writes productid, prdtypecode, category, confidence, error.
A row without a title (blank, or markup only: the rule `mlops load` applies) gets an error text
and no prediction; the file as a whole is refused
only when it cannot be read (missing file or column, not UTF-8, not a CSV), with a message
that says why.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from datetime import date, datetime, timezone
from pathlib import Path

from . import registry
from .categories import category_name
from .config import Settings
from .errors import Conflict, SourceError
from .features import has_letter_or_digit
from .sources import separator_hint, unreadable

log = logging.getLogger(__name__)

REQUIRED = ("designation", "description", "productid")
OUTPUT_COLUMNS = ("productid", "prdtypecode", "category", "confidence", "error")
CHUNK_ROWS = 5000


def _chunks(path: Path):
    import pandas as pd

    if not path.is_file():
        raise SourceError(f"input file not found: {path}")
    try:
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", index_col=0,
                             chunksize=CHUNK_ROWS)
        first, rows = True, 0
        for chunk in reader:
            if first:
                missing = [c for c in REQUIRED if c not in chunk.columns]
                if missing:
                    raise SourceError(
                        f"input file {path} is missing column(s) {', '.join(missing)} (found: "
                        f"{', '.join(map(str, chunk.columns)) or 'none'}; expected the X format: an "
                        "index column, then designation, description, productid, imageid)"
                        + separator_hint([chunk.index.name or "", *chunk.columns]))
                first = False
            if len(chunk):  # a header-only file reads as one empty chunk
                rows += len(chunk)
                yield chunk
        if not rows:
            raise SourceError(f"input file {path} has a header but no rows")
    except UnicodeDecodeError:
        from .sources import first_bad_byte

        raise SourceError(f"input file {path} is not valid UTF-8 ({first_bad_byte(path)}); "
                          "re-encode it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise SourceError(f"input file {path} is empty") from None
    except pd.errors.ParserError as exc:
        raise unreadable(path, "input", exc) from None


def resolve_model(settings: Settings, version: str | int | None):
    """(version, LoadedModel) of the given version, or of the champion."""
    from .serving import LoadedModel

    if version is None:
        champion = registry.version_by_alias(settings, registry.CHAMPION)
        if champion is None:
            raise Conflict("No model in production yet: promote a model (mlops promote) first, "
                             "or pass --version")
        version = champion["version"]
    info = registry.get_version(settings, version)
    model = registry.load_model(settings, version=info["version"])
    return info["version"], LoadedModel.prepare(info["version"], model, info.get("mlflow_run_id"))


def predict_file(settings: Settings, input_path, out_path, version: str | int | None = None) -> dict:
    """Score `input_path` into `out_path` (written whole, then renamed into place); returns counts."""
    started = time.perf_counter()
    input_path, out_path = Path(input_path), Path(out_path)
    chunks = _chunks(input_path)
    first = next(chunks)  # refuse an unreadable file before loading the model
    version, loaded = resolve_model(settings, version)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    counts = {"rows": 0, "predicted": 0, "errors": 0}
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(OUTPUT_COLUMNS)
            for chunk in _prepend(first, chunks):
                _score_chunk(chunk, loaded, w, counts)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - started
    log.info("scored %d rows with %s version %s in %.1fs (%d errors)", counts["rows"], settings.model_name,
             version, seconds, counts["errors"])
    return {**counts, "model_name": settings.model_name, "model_version": str(version),
            "out_path": str(out_path), "seconds": round(seconds, 3)}


def _prepend(first, rest):
    yield first
    yield from rest


def _score_chunk(chunk, loaded, writer, counts: dict) -> None:
    designations = chunk["designation"].tolist()
    descriptions = chunk["description"].tolist()
    productids = chunk["productid"].tolist()
    # the rule `mlops load` rejects a title by (features.has_letter_or_digit): "<br/>", "&nbsp;"
    # or "---" leave the model nothing of the title, and its answer would be the classes' prior
    why = {i: "empty designation (title): no prediction" if not d.strip() else
           "designation (title) has no letter or digit once markup is removed: no prediction"
           for i, d in enumerate(designations) if not has_letter_or_digit(d)}
    ok = [i for i in range(len(designations)) if i not in why]
    results: dict[int, tuple] = {}
    if ok:
        pred = loaded.predict([(designations[i], descriptions[i]) for i in ok], 1)
        for j, i in enumerate(ok):
            code = int(pred.codes[j])
            results[i] = (code, category_name(code), f"{float(pred.confidence[j]):.6f}", "")
    for i, pid in enumerate(productids):
        counts["rows"] += 1
        if i in results:
            counts["predicted"] += 1
            writer.writerow((pid.strip(), *results[i]))
        else:
            counts["errors"] += 1
            writer.writerow((pid.strip(), "", "", "", why[i]))


def export_inference_log(conn, since: date | datetime | None, out_path) -> int:
    """Write the inference_log rows logged since `since` (a date means its midnight UTC; None:
    all) to a CSV file with a header; returns the number of rows."""
    from . import store

    if isinstance(since, date) and not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    elif isinstance(since, datetime) and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            n = store.export_inference_log(conn, f, since)
        conn.rollback()
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n
