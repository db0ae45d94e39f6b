"""Read the Rakuten source files as published (X_train_update.csv + Y_train_CVw08PX.csv).

A problem with the files as a whole (missing file or column, encoding, X/Y mismatch) raises
SourceError naming the file and the problem; row-level problems are left to the loader, which
keeps those rows in rejected_rows with a reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .errors import SourceError

X_COLUMNS = ("designation", "description", "productid", "imageid")
Y_COLUMNS = ("prdtypecode",)


def separator_hint(names) -> str:
    """A clause for an error when the header was split on the wrong character (a spreadsheet's
    export with ';' or tabs reads as one column): `names`, the header's names as read."""
    for sep, label in ((";", "';'"), ("\t", "tabs")):
        if any(sep in str(name) for name in names):
            return f"; the header looks separated by {label}: the catalogue's CSV files are comma-separated"
    return ""


def unreadable(path: Path, label: str, exc: Exception) -> SourceError:
    """The error for a file pandas cannot parse: where a row has more fields than the header (or
    where it stops being UTF-8: pandas stops at the fields first)."""
    import csv

    try:
        where = unclosed_quote_at_end(path) if "EOF inside string" in str(exc) else field_count_problem(path)
    except UnicodeDecodeError:
        return SourceError(f"{label} file {path} is not valid UTF-8 ({first_bad_byte(path)}); re-encode it as UTF-8")
    except csv.Error:  # a field over the csv module's limit, say: pandas' own words then
        where = ""
    return SourceError(f"{label} file {path} is not a readable CSV: " + (where or str(exc).strip()))


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its fields) for each record, the header first, read again
    with the csv module (pandas' quoting rules): what the error paths and short_records name lines by."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        start = 1
        for row in rows:
            yield start, row
            start = rows.line_num + 1


def unclosed_quote_at_end(path: Path) -> str:
    """Where the record starts whose quoted field the file ends inside (pandas names a row count
    that is neither a line nor an index): most likely a file cut short. On this error path only."""
    start = 1
    for start, _ in _records(path):
        pass
    return (f"the file ends inside a quoted field of the record that starts at line {start:,} "
            "(a file cut short, or a quote never closed)")


def field_count_problem(path: Path) -> str:
    """Where a row holds more fields than the header (pandas' own error names no line), with the
    separator hint when the header has no comma. Read again, on this error path only."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        hint = separator_hint(header) if len(header) <= 1 else ""
        for row in rows:
            if len(row) > len(header):
                return (f"line {rows.line_num:,} has {len(row)} fields, the header {len(header)} "
                        f"(a comma inside an unquoted text?){hint}")
    return hint.lstrip("; ")


def short_records(path: Path) -> dict[str, str]:
    """{index value: why} for the records with fewer fields than the header. pandas pads such a
    row on the right with empty values, so a row that lost a field has the next ones in the wrong
    columns (its imageid read as its productid) and a file cut in its last row loads a fragment.
    Read again with the csv module (pandas' quoting rules), only when the last column has an empty
    value: a padded row always has."""
    records = _records(path)
    _, header = next(records, (1, []))
    out: dict[str, str] = {}
    for start, row in records:
        if row and any(v.strip() for v in row) and len(row) < len(header):
            out[row[0].strip().replace("\x00", "\ufffd")] = (
                f"line {start:,} has {len(row)} fields, the header {len(header)}: a field is missing, so "
                "the values after it would be read into the wrong columns (or the file ends in this row)")
    return out


def record_lines(path: Path) -> dict[str, int]:
    """{index value: the line its record starts on}. On an error path only."""
    records = _records(path)
    next(records, None)  # the header
    out: dict[str, int] = {}
    for start, row in records:
        if row:
            out.setdefault(row[0].strip(), start)
    return out


def swallowed_rows(df: pd.DataFrame, missing, path: Path, label: str) -> str:
    """Why `df` lacks the index values `missing`, when a quote never closed made one field run on
    over their rows (a line break, then the missing index and a comma, inside a field); '' when
    that is not it."""
    for value in list(missing)[:20]:
        needle = f"\n{value},"
        for column in df.columns:
            hit = df.index[df[column].str.contains(needle, regex=False)]
            if len(hit):
                line = record_lines(path).get(str(hit[0]))
                at = f"{label} line {line:,}" if line else label  # the csv module may split it otherwise
                return (f"; {at}: the quote opened in the {column} of the row at index {hit[0]!r} "
                        f"is not closed where that field ends, so the field runs on over the rows after it (the "
                        f"row at index {value!r} is inside it): close or double that quote")
    return ""


def first_bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8 (the decoder's offset in pandas' error is into its read
    buffer, not the file). Read again, on this error path only."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        newline = b"\n"
        return (f"byte {data[exc.start:exc.start + 1]!r} at offset {exc.start:,}, "
                f"line {data.count(newline, 0, exc.start) + 1:,} of the file")
    return "undecodable"


def _read(path: Path, expected: tuple[str, ...], label: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """The file's expected columns, and short_records(): the rows that lost a field."""
    if not path.is_file():
        raise SourceError(f"{label} file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", index_col=0)
    except UnicodeDecodeError:
        raise SourceError(f"{label} file {path} is not valid UTF-8 ({first_bad_byte(path)}); "
                          "re-encode it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise SourceError(f"{label} file {path} is empty") from None
    except pd.errors.ParserError as exc:
        raise unreadable(path, label, exc) from None
    # a header written by hand or a spreadsheet: "prdtypecode " or ", designation" is the column
    df.columns = [str(c).strip(" \t\ufeff\xa0") for c in df.columns]
    missing = [c for c in expected if c not in df.columns]
    first = str(df.index.name or "").strip(" \t\ufeff\xa0")
    if missing and first in expected:
        raise SourceError(f"{label} file {path} has no index column: its first column is {first!r}, which the "
                          f"catalogue's files have second (expected an unnamed index column, then "
                          f"{', '.join(expected)}; a file saved with index=False?)")
    if missing:
        raise SourceError(
            f"{label} file {path} is missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns)) or 'none'}; expected an index column then "
            f"{', '.join(expected)}){separator_hint([df.index.name or '', *df.columns])}"
        )
    # as in every stored text, NUL is U+FFFD: a rejected row keeps its index (rejected_rows.source_index)
    df.index = df.index.astype(str).str.strip().str.replace("\x00", "\ufffd", regex=False)
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise SourceError(f"{label} file {path} has a duplicated index value {dup!r} in its first column")
    short = {}
    if (df[expected[-1]] == "").any():
        import csv

        try:
            short = {k: f"{label} {why}" for k, why in short_records(path).items()}
        except csv.Error:  # pandas read it: what the csv module cannot is left to the row checks
            pass
    return df[list(expected)], short


def read_source(x_path: str | Path, y_path: str | Path) -> pd.DataFrame:
    """X and Y joined on the index column, all fields as strings; index = source index as str.
    Column `field_problem`: why a row's fields cannot be trusted ('' for nearly all: a record of X
    or Y with fewer fields than its header, short_records), for the loader to reject it."""
    x_path, y_path = Path(x_path), Path(y_path)
    x, x_short = _read(x_path, X_COLUMNS, "X")
    y, y_short = _read(y_path, Y_COLUMNS, "Y")
    if len(x) != len(y) or not x.index.sort_values().equals(y.index.sort_values()):
        only_x = x.index.difference(y.index)
        only_y = y.index.difference(x.index)
        detail = []
        if len(only_x):
            detail.append(f"{len(only_x)} index value(s) only in X (first: {only_x[0]!r})")
        if len(only_y):
            detail.append(f"{len(only_y)} index value(s) only in Y (first: {only_y[0]!r})")
        raise SourceError(
            f"X ({x_path.name}, {len(x)} rows) and Y ({y_path.name}, {len(y)} rows) do not line up "
            f"by their index column: {'; '.join(detail)}"
            + (swallowed_rows(x, only_y, x_path, "X") or swallowed_rows(y, only_x, y_path, "Y"))
        )
    df = x.join(y)  # by index value: Y's rows may come in another order
    df.index.name = "source_index"
    short = {**y_short, **x_short}  # X's first: its fields are the ones shifted into the product
    df["field_problem"] = [short.get(i, "") for i in df.index] if short else ""
    return df


def seeded_order(productids: pd.Series, seed: int) -> np.ndarray:
    """Positions of the rows in a stable pseudo-random order keyed on (seed, productid).

    Hash-based rather than a shuffle of row positions, so the order does not depend on the order
    of the rows in the file; ties (duplicated productids) keep file order.
    """
    salt = f"{seed}:".encode()
    keys = np.fromiter(
        (int.from_bytes(hashlib.blake2b(salt + p.encode(), digest_size=8).digest(), "big") >> 1
         for p in productids.astype(str)),
        dtype=np.int64,
        count=len(productids),
    )
    return np.lexsort((np.arange(len(keys)), keys))
