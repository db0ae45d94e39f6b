"""The crontab that supercronic runs: `crontab.template` with the schedule settings filled in.

The template (the package's `crontab.template`, or $MLOPS_CRONTAB_TEMPLATE) uses `string.Template`
placeholders: ${WEEKLY_SCHEDULE}, ${DAILY_SCHEDULE} and ${CRON_TZ}. Values are validated before
they are written, so a typo in .env stops the cron container at start-up with a message naming
the variable instead of producing a crontab that supercronic rejects (or, worse, an extra line).
`mlops crontab render [--out FILE]` prints or writes the result.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from string import Template

from .errors import Invalid

# supercronic parses schedules with gorhill/cronexpr: 5 fields, 6 = 5 + year, 7 = seconds + 5 + year.
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_FIELD = re.compile(r"^[0-9A-Za-z*?/,#\-]+$")
_NUMERIC_FIELD = re.compile(r"^[0-9*?/,\-]+$")  # seconds and year
_TZ = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")

# Fallback when croniter is not installed: one field of a standard 5-field expression.
_ATOM = r"(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?L?W?(#[1-5])?)(/[0-9]+)?"
_LIST = re.compile(rf"^{_ATOM}(,{_ATOM})*$")


def default_template_path():
    """$MLOPS_CRONTAB_TEMPLATE, else the package's crontab.template (package data)."""
    env = os.environ.get("MLOPS_CRONTAB_TEMPLATE")
    return Path(env) if env else resources.files("mlops_cli") / "crontab.template"


def default_template() -> str:
    """The text of the crontab template (see default_template_path)."""
    path = default_template_path()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(
            f"Cannot read the crontab template {path}: {exc.strerror or exc}. "
            "Set MLOPS_CRONTAB_TEMPLATE to its path."
        ) from None


def _valid_five(expr: str) -> bool:
    try:
        from croniter import croniter
    except ImportError:  # croniter is a test extra: fall back to a syntactic check
        return all(_LIST.match(f) for f in expr.split())
    try:
        return bool(croniter.is_valid(expr))
    except Exception:  # pragma: no cover - older croniter versions raise on odd input
        return False


def validate_schedule(variable: str, value: str) -> str:
    """The schedule, stripped; MlopsError naming `variable` when it is not a cron expression."""
    text = (value or "").strip()
    hint = "expected 5 fields (minute hour day-of-month month day-of-week), or 6-7 with year/seconds"
    if not text:
        raise Invalid(f"{variable} is empty: {hint}, e.g. '0 2 * * 1'")
    if "\n" in text or "\r" in text:
        raise Invalid(f"{variable} must be a single line, got {value!r}")
    fields = text.split()
    if fields[0].startswith("@"):
        if len(fields) != 1 or fields[0] not in _MACROS:
            raise Invalid(f"Invalid {variable} {value!r}: unknown macro (use one of {', '.join(sorted(_MACROS))})")
        return text
    if len(fields) not in (5, 6, 7):
        raise Invalid(f"Invalid {variable} {value!r}: {hint}; got {len(fields)} field(s)")
    if not all(_FIELD.match(f) for f in fields):
        raise Invalid(f"Invalid {variable} {value!r}: unexpected characters")
    if len(fields) == 5:
        five, extra = fields, []
    elif len(fields) == 6:
        five, extra = fields[:5], fields[5:]  # + year
    else:
        five, extra = fields[1:6], [fields[0], fields[6]]  # seconds + ... + year
    if not all(_NUMERIC_FIELD.match(f) for f in extra) or not _valid_five(" ".join(five)):
        raise Invalid(f"Invalid {variable} {value!r}: not a valid cron schedule ({hint})")
    return " ".join(fields)


def validate_timezone(value: str) -> str:
    """An IANA zone name; MlopsError naming CRON_TZ otherwise."""
    tz = (value or "").strip()
    if not _TZ.match(tz):
        raise Invalid(f"Invalid CRON_TZ {value!r}: expected an IANA time zone such as Europe/Paris")
    try:
        import zoneinfo

        known = zoneinfo.available_timezones()
    except Exception:  # pragma: no cover
        known = set()
    if known and tz not in known and tz != "UTC":  # no tz database at all: trust the syntax
        raise Invalid(f"Unknown CRON_TZ {value!r}: expected an IANA time zone such as Europe/Paris")
    return tz


def _times(expr: str) -> list[tuple[int, int]] | None:
    """The (hour, minute) pairs of a schedule whose hour and minute fields are plain numbers or
    lists of them; None for any other form (ranges, steps: not checked)."""
    fields = expr.split()
    if fields[0] in ("@daily", "@midnight", "@weekly"):
        return [(0, 0)]
    if fields[0].startswith("@") or len(fields) < 5:
        return None
    minute, hour = (fields[1], fields[2]) if len(fields) == 7 else (fields[0], fields[1])
    if not re.fullmatch(r"\d+(,\d+)*", minute) or not re.fullmatch(r"\d+(,\d+)*", hour):
        return None
    return [(int(h), int(m)) for h in hour.split(",") for m in minute.split(",") if int(h) < 24 and int(m) < 60]


def utc_date_shift(variable: str, expr: str, tz: str) -> str | None:
    """Why a schedule is risky, None when it is not: a run whose UTC date is the local date's in
    one season and the day before (or after) in the other. A pipeline's slot and windows are UTC
    days (`as_of`: the UTC date it runs on), so at each change of clock one day is checked twice
    and one never, and for half the year the daily window ends up to 23 hours before the run."""
    from datetime import date, datetime, time, timezone

    try:
        import zoneinfo

        zone = zoneinfo.ZoneInfo(tz)
    except Exception:  # no tz database: nothing to say
        return None
    days = (date(2027, 1, 15), date(2027, 7, 15))  # both seasons, either hemisphere

    def at(day, hour, minute):
        utc = datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(timezone.utc)
        return (utc.date() - day).days, utc.strftime("%H:%M")

    def shifts(hour, minute) -> bool:
        return len({at(day, hour, minute)[0] for day in days}) > 1

    for hour, minute in _times(expr) or []:
        if shifts(hour, minute):
            (_, t1), (_, t2) = (at(day, hour, minute) for day in days)
            risky = [h * 60 + m for h in range(24) for m in range(0, 60, 15) if shifts(h, m)]
            span = f"{risky[0] // 60:02d}:{risky[0] % 60:02d} to {risky[-1] // 60:02d}:{risky[-1] % 60 + 14:02d}"
            return (f"{variable} {expr!r} in {tz} runs at {t1} UTC in {days[0]:%B} and {t2} UTC in {days[1]:%B}, "
                    "on either side of UTC midnight: its UTC date shifts by a day at each change of clock (one "
                    "day's slot is run twice, another never) and part of the year its window ends up to 23 h "
                    f"before the run. Choose a time on the same UTC date all year (in {tz}: not {span})")
    return None


def schedule_warnings(settings) -> list[str]:
    """What `mlops crontab render` warns about (the schedules are valid; they may still mislead)."""
    tz = validate_timezone(settings.cron_tz)
    found = [utc_date_shift(var, validate_schedule(var, value), tz)
             for var, value in (("WEEKLY_SCHEDULE", settings.weekly_schedule),
                                ("DAILY_SCHEDULE", settings.daily_schedule))]
    return [w for w in found if w]


def render_crontab(settings, template_text: str | None = None) -> str:
    """The crontab for `settings` (weekly_schedule, daily_schedule, cron_tz).

    `template_text` defaults to default_template(). Raises MlopsError naming the variable when a
    setting is malformed, or when the template uses an unknown placeholder.
    """
    values = {
        "WEEKLY_SCHEDULE": validate_schedule("WEEKLY_SCHEDULE", settings.weekly_schedule),
        "DAILY_SCHEDULE": validate_schedule("DAILY_SCHEDULE", settings.daily_schedule),
        "CRON_TZ": validate_timezone(settings.cron_tz),
    }
    text = default_template() if template_text is None else template_text
    try:
        rendered = Template(text).substitute(values)
    except KeyError as exc:
        raise Invalid(
            f"The crontab template uses ${{{exc.args[0]}}}, which is not one of "
            f"{', '.join('${' + k + '}' for k in values)} (write $$ for a literal $)"
        ) from None
    except ValueError as exc:
        raise Invalid(f"The crontab template has a malformed placeholder: {exc} (write $$ for a literal $)") from None
    return rendered if rendered.endswith("\n") else rendered + "\n"
