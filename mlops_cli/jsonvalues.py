"""Plain JSON values from what the library computes (numpy scalars, NaN, datetimes): used by the
store for JSONB parameters and by the notifications for payloads, so neither depends on the other."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def jsonable(value: Any) -> Any:
    """A JSON- and JSONB-safe copy: NaN/inf -> None, numpy scalars -> Python, others -> str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def storable(value: Any) -> Any:
    """`value` with NUL and lone surrogates (a JSON `\\ud800` escape without its pair) replaced
    by U+FFFD, in strings and inside dicts and lists: PostgreSQL text and JSONB hold neither, and
    what a refused request sent must still be echoed (its 422 encodes as UTF-8) and audited."""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value
