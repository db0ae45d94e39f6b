"""Plain-text rendering for humans: aligned tables and short values. No I/O."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Sequence


def short(value: Any, width: int = 60) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, Decimal):
        return short(float(value), width)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str, ensure_ascii=False)
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Sequence[dict], columns: Sequence[str], headers: Sequence[str] | None = None,
          width: int = 60) -> str:
    """An aligned text table of `columns` from `rows` (dicts)."""
    headers = list(headers or columns)
    cells = [[short(r.get(c), width) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def to_json(value: Any) -> str:
    """JSON for --json output: datetimes as ISO strings, Decimals as floats."""

    def default(o):
        if isinstance(o, (datetime, date)):
            return o.isoformat()
        if isinstance(o, Decimal):
            return float(o)
        return str(o)

    return json.dumps(value, default=default, ensure_ascii=False, indent=2)


def labels_text(labels: Sequence[dict], sep: str = "; ") -> str:
    """Each labeller's label of ops.feedback.disagreements as one line: `alice: 10 Books · bob: ...`."""
    return sep.join(f"{label['submitted_by'] or '?'}: {label['prdtypecode']} {label['category']}" for label in labels)
