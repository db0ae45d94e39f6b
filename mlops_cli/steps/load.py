"""The weekly load: move the next slice of the source catalogue into `products` as one batch.

Order: a stable, seeded order over productid (sources.seeded_order). The first batch takes
INITIAL_LOAD_FRACTION of the catalogue (what existed before the weekly loads), each later one
LOAD_FRACTION. One scheduled batch per ISO week of --as-of: a second run in the same week loads
nothing unless forced. Invalid rows (including titles or descriptions over MAX_TITLE_CHARS /
MAX_DESCRIPTION_CHARS) go to rejected_rows with a reason, in the same transaction as the
products, the batch and the step's audit row. A product already added from feedback (source
'feedback') is not a duplicate: the catalogue row replaces it and counts in this batch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

from .. import notify, store
from ..categories import PRDTYPECODES
from ..config import Settings
from ..errors import Invalid, SourceError
from ..features import has_letter_or_digit
from ..jsonvalues import storable
from ..runs import StepResult, StepRun, Trigger, run_step
from ..sources import read_source, seeded_order
from ..vocab import Step

log = logging.getLogger(__name__)

STEP = Step.LOAD.value


def iso_week_slot(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def resolve_sources(settings: Settings, x_path: str | None, y_path: str | None) -> tuple[Path, Path]:
    x = x_path or settings.x_path
    y = y_path or settings.y_path
    if not x or not y:
        raise Invalid(
            "No source catalogue: pass --x-path and --y-path (the Rakuten X_train_update.csv and "
            "Y_train_CVw08PX.csv) or set MLOPS_X_PATH and MLOPS_Y_PATH; "
            "`mlops generate-data` writes a synthetic pair"
        )
    # Absolute and without symlinks: the path is how the next batch finds where this one ended.
    return Path(x).resolve(), Path(y).resolve()


def same_file(recorded: str, x: Path) -> bool:
    """Whether a batch's recorded X path is the file `x` (recorded before paths were resolved,
    it may be relative or go through a symlink)."""
    if Path(recorded) == x:
        return True
    try:
        return os.path.samefile(recorded, x)
    except OSError:
        return False


def _same_order(conn, batch: dict, keys: pd.Series, n: int, *, keyed: bool) -> bool:
    """Whether a batch from before migration 018 (no key) took its rows from this order: until a
    batch of the file has a key, one of the same size whose products all stand in its own
    offsets' window here (another seed or other products scatter them)."""
    if keyed or batch["source_rows"] != n:
        return False
    window = set(keys.iloc[batch["start_offset"]:batch["end_offset"]].dropna())
    return store.productids_of_batches(conn, [batch["id"]]) <= window


def source_key(productids: pd.Series, seed: int) -> str:
    """What a batch's offsets are positions among: the seed and the productids in load order
    (migration 018). Not the texts: an edited row does not move the others."""
    digest = hashlib.sha256(f"{seed}\n".encode())
    for p in productids.str.strip():
        digest.update(p.encode() + b"\n")
    return digest.hexdigest()


# What a rejected row keeps of an oversized field: enough to recognise it, not megabytes of it.
KEPT_CHARS = 1000


# ASCII digits only: str.isdigit and \d also take fullwidth and other scripts' digits.
_ID_RE = r"[0-9]{1,18}"
# A code as files write it: 10, " 10 ", +10, 0010, or 10.0 when a spreadsheet or pandas saved it.
_CODE_RE = r"([+-]?[0-9]{1,9})(?:\.0*)?"
_TEXT_FIELDS = ("designation", "description", "productid", "imageid", "prdtypecode")


def canonical_codes(codes: pd.Series) -> pd.Series:
    """Each prdtypecode as its integer's text ("10.0", "+10", "0010" -> "10"); None if unparsable."""
    whole = codes.str.strip().str.extract(f"^{_CODE_RE}$", expand=False)
    return whole.map(lambda v: str(int(v)) if isinstance(v, str) else None)


def row_reasons(rows: pd.DataFrame, limits: dict[str, tuple[str, int]] | None = None) -> pd.Series:
    """A reason per row ('' when valid) from the row alone; the first failing check wins.
    Duplicates are judged among the valid rows (`duplicate_reasons`): a rejected first copy does
    not make a good second one a duplicate. `limits`: field -> (setting, max chars)."""
    reasons = pd.Series("", index=rows.index, dtype=object)

    def flag(mask: pd.Series, texts: pd.Series | str) -> None:
        mask = mask & (reasons == "")
        if isinstance(texts, str):
            reasons[mask] = texts
        else:
            reasons[mask] = texts[mask]

    if "field_problem" in rows:  # fields shifted into the wrong columns: nothing else can be trusted
        flag(rows["field_problem"] != "", rows["field_problem"])
    pid = rows["productid"].str.strip()
    flag(~pid.str.fullmatch(_ID_RE), "unparsable productid " + pid.map(repr))
    for column in _TEXT_FIELDS:  # PostgreSQL text holds no NUL: one would fail the whole COPY
        flag(rows[column].str.contains("\x00", regex=False), f"NUL character in {column}")
    title = rows["designation"]
    flag(title.str.strip() == "", "empty designation (title)")
    # What the model reads of the title (tags and entities gone): none of it a letter or digit.
    flag(~title.map(has_letter_or_digit),
         "designation (title) has no letter or digit once cleaned: " + title.str.slice(0, 80).map(repr))
    for column, (setting, limit) in (limits or {}).items():
        length = rows[column].str.len()
        flag(length > limit, f"{column} too long: " + length.map("{:,}".format)
             + f" characters (limit {limit:,}, {setting})")
    code = rows["prdtypecode"].str.strip()
    canon = canonical_codes(code)
    flag(canon.isna(), "unparsable prdtypecode " + code.map(repr))
    known = {str(c) for c in PRDTYPECODES}
    flag(canon.notna() & ~canon.isin(known), "unknown prdtypecode " + code)
    img = rows["imageid"].str.strip()
    flag((img != "") & ~img.str.fullmatch(_ID_RE), "unparsable imageid " + img.map(repr))
    return reasons


def productid_keys(rows: pd.DataFrame) -> pd.Series:
    """The integer a productid is stored as (so "0123" and "123" are the same product); None
    when unparsable."""
    pid = rows["productid"].str.strip()
    ok = pid.str.fullmatch(_ID_RE)
    # object dtype: a float64 Series (what map gives ints with None) rounds 18-digit ids
    return pd.Series([int(p) if good else None for p, good in zip(pid, ok)], index=rows.index, dtype=object)


def duplicate_reasons(rows: pd.DataFrame, reasons: pd.Series, keys: pd.Series, first_seen: pd.Series,
                      already_loaded: dict[int, int]) -> pd.Series:
    """`reasons` with the valid rows that repeat a product flagged: `keys` are the rows'
    productid_keys; `first_seen` maps each row to the source index of the first valid occurrence
    (in load order) of its productid, so a duplicate names the row it repeats; `already_loaded`:
    productid -> batch of the catalogue."""
    reasons = reasons.copy()
    pid = rows["productid"].str.strip()
    valid = reasons == ""
    repeated = valid & (first_seen != rows.index.to_series())
    reasons[repeated] = ("duplicate productid " + pid + " (also at source index " + first_seen + ")")[repeated]
    if already_loaded:
        batch = keys.map(lambda p: already_loaded.get(p) if p is not None else None)
        loaded = (reasons == "") & batch.notna()
        reasons[loaded] = ("duplicate productid " + pid + " (already loaded in batch "
                           + batch.map(lambda b: "" if b is None or b != b else str(int(b))) + ")")[loaded]
    return reasons


def _notify_all_rejected(conn, settings: Settings, step: StepRun, batch_id: int, slot: str, x: Path,
                         reasons: pd.Series) -> None:
    """Every row of the batch rejected: most likely a broken or wrong file. Nothing new to train on
    (the train step's load gate stays closed), so a person is told (log, email, Slack)."""
    kinds = reasons.str.replace(r"\d+", "N", regex=True).str.split(":").str[0].value_counts()  # one kind a reason
    top = {str(k): int(v) for k, v in kinds.head(3).items()}
    notify.send(conn, settings, notify.Message(
        event="load_rejected", severity="warning",
        subject=f"[mlops] load batch #{batch_id} ({slot}): all {len(reasons)} rows rejected",
        context={"batch_id": batch_id, "slot": slot, "source_x": str(x), "rows_rejected": len(reasons),
                 "reasons": top, "commands": ["mlops runs --step load",
                                              f"SELECT reason, count(*) FROM rejected_rows WHERE batch_id = {batch_id} "
                                              "GROUP BY 1 ORDER BY 2 DESC"]}),
        kinds=("log", "email", "slack"), pipeline_run_id=step.pipeline_run_id)
    step.outputs["all_rejected"] = True
    step.message += "; every row rejected: nothing new to train on (notified)"


def load(
    conn,
    settings: Settings,
    trigger: Trigger,
    *,
    x_path: str | None = None,
    y_path: str | None = None,
    as_of: date | None = None,
    force: bool = False,
) -> StepResult:
    """Load the next batch. Skipped (not failed) when the week is done or the source exhausted."""
    x, y = resolve_sources(settings, x_path, y_path)
    as_of = as_of or datetime.now(timezone.utc).date()
    slot = iso_week_slot(as_of)
    trigger = trigger.child(slot=trigger.slot or slot)
    params = {"x_path": str(x), "y_path": str(y), "as_of": as_of.isoformat(), "force": force,
              "load_fraction": settings.load_fraction,
              "initial_load_fraction": settings.initial_load_fraction, "seed": settings.load_seed}

    def body(step: StepRun) -> None:
        if not force:
            done = store.batch_for_slot(conn, slot)
            if done:
                step.skip(f"week {slot} already loaded (batch #{done['id']}, {done['rows_loaded']} rows); "
                          "use --force to load another batch")
                step.outputs["batch_id"] = done["id"]
                return
        log.info("reading source %s + %s", x, y)
        source = read_source(x, y)
        n = len(source)
        if n == 0:
            raise SourceError(f"Source {x} has no rows")
        order = seeded_order(source["productid"].str.strip(), settings.load_seed)
        ordered = source.iloc[order]
        key = source_key(ordered["productid"], settings.load_seed)
        keys = productid_keys(ordered)
        # Offsets are positions among one set of products (the key); the initial fraction applies
        # to an empty catalogue. What this file gave under another key (before it grew or was
        # replaced) is not taken again, wherever its new order puts it (docs/PIPELINE.md).
        spellings = [r for r in store.batch_sources(conn) if same_file(r, x)] or [str(x)]
        batches = store.batches_from(conn, spellings)
        keyed = any(b["source_key"] for b in batches)
        same = [b for b in batches if b["source_key"] == key or b["source_key"] is None and
                _same_order(conn, b, keys, n, keyed=keyed)]
        other = [b for b in batches if b not in same]
        previous = max(same, key=lambda b: (b["end_offset"], b["id"]), default=None)
        start = previous["end_offset"] if previous else 0
        limits = {"designation": ("MAX_TITLE_CHARS", settings.max_title_chars),
                  "description": ("MAX_DESCRIPTION_CHARS", settings.max_description_chars)}
        checked = row_reasons(ordered, limits)
        # passed over: the products loaded under another key, and the rows rejected then that are
        # still invalid (a row fixed since is taken)
        taken = store.productids_of_batches(conn, [b["id"] for b in other])
        refused = store.rejected_productids_of_batches(conn, [b["id"] for b in other])
        first = store.last_batch(conn) is None
        fraction = settings.initial_load_fraction if first else settings.load_fraction
        want = max(1, math.ceil(fraction * n))
        position = pd.Series(range(n), index=ordered.index)
        open_ = (position >= start) & ~keys.isin(taken) \
            & ~((checked != "") & ordered["productid"].str.strip().isin(refused))
        chosen = position[open_].iloc[:want]
        end = n if len(chosen) < want else int(chosen.iloc[-1]) + 1
        selected = open_ & (position < end)
        step.outputs["source_key"] = key
        if batches and batches[-1] in other:  # the file changed since its last batch
            changed = batches[-1]
            skipped = int(((position >= start) & (position < end) & ~selected).sum())
            step.outputs["source_changed"] = {"since_batch": changed["id"], "rows_then": changed["source_rows"],
                                              "rows_now": n, "skipped_loaded_before": skipped}
            log.warning("%s changed since batch #%d (%d rows then, %d now, or other products): the products it "
                        "gave before (and the rows it refused, still invalid) are not taken again", x, changed["id"],
                        changed["source_rows"], n)
        if not len(chosen):
            step.skip(f"source exhausted: all {n} rows of {x.name} are loaded; nothing to load")
            step.outputs.update({"source_rows": n, "rows_loaded": 0})
            return
        # Validity and the first valid occurrence of each product in load order, over the whole
        # source, so a duplicate is rejected the same way whichever batch it falls in. Before the
        # batch, what counts is what was loaded (a row rejected then, under other limits, is
        # valid now but not in the catalogue: a later copy is not its duplicate).
        earlier = (position < end) & ~selected
        # productid -> its batch, for every product up to the batch's end (one read of the catalogue)
        existing = store.existing_productids(conn, [int(p) for p in keys[position < end].dropna()])
        valid_keys = keys.where((checked == "") & ~earlier | earlier & keys.isin(set(existing)))
        source_index = pd.Series(ordered.index, index=ordered.index)
        first_seen = source_index.where(valid_keys.notna()).groupby(valid_keys.values).transform("first") \
            .fillna(source_index)
        rows, keys = ordered[selected.values], keys[selected.values]
        log.info("validating %d rows (offset %d to %d of %d)", len(rows), start, end, n)
        reasons = duplicate_reasons(rows, checked[selected.values], keys, first_seen[selected.values], existing)
        good = rows[reasons == ""]
        good_ids = [int(p) for p in keys[reasons == ""]]
        bad = rows[reasons != ""].copy()
        for column, (_setting, limit) in limits.items():
            long = bad[column].str.len() > limit
            bad.loc[long, column] = bad.loc[long, column].map(
                lambda text: f"{text[:KEPT_CHARS]}... [{len(text):,} characters, cut to {KEPT_CHARS:,} here]")
        batch_id = store.insert_batch(
            conn, pipeline_run_id=step.pipeline_run_id, slot=slot, as_of=as_of, forced=force,
            kind="initial" if first else "incremental", source_x=str(x), source_y=str(y),
            source_rows=n, start_offset=start, end_offset=end, rows_loaded=len(good),
            rows_rejected=len(bad), source_key=key,
        )
        loaded_at = datetime.combine(as_of, datetime.now(timezone.utc).time(), tzinfo=timezone.utc)
        # A product first added from feedback (seen in traffic, labelled) becomes a catalogue row:
        # the batch's text and batch win; its latest human label is applied again by the next
        # training (audited as an override when it differs from the catalogue's code).
        replaced = store.replace_feedback_products(conn, good_ids)
        log.info("copying %d rows into products (batch #%d)", len(good), batch_id)
        store.copy_products(
            conn,
            zip(good_ids, good["designation"], good["description"],
                canonical_codes(good["prdtypecode"]).astype(int),
                [int(i) if i.strip() else None for i in good["imageid"]],
                [batch_id] * len(good), [loaded_at] * len(good)),
        )
        store.insert_rejected(
            conn, batch_id,
            ((idx, storable({"index": idx, **{k: v for k, v in row.items() if k != "field_problem"}}), reason)
             for (idx, row), reason in zip(bad.to_dict("index").items(), reasons[reasons != ""])),
        )
        step.outputs.update({
            "batch_id": batch_id, "slot": slot, "rows_loaded": len(good), "rows_rejected": len(bad),
            "start_offset": start, "end_offset": end, "source_rows": n, "feedback_rows_replaced": replaced,
            "catalogue_rows": store.catalogue_counts(conn)["products"],
        })
        step.message = (f"batch #{batch_id} for {slot}: {len(good)} rows loaded, {len(bad)} rejected "
                        f"(source rows {start}-{end} of {n})")
        if "source_changed" in step.outputs:
            c = step.outputs["source_changed"]
            step.message += (f"; {x.name} changed since batch #{c['since_batch']} ({c['rows_then']} rows then, {n} "
                             "now, or other products): its rows are taken in the new order, without the "
                             f"products it gave before or the rows it refused ({c['skipped_loaded_before']} passed "
                             "over here), so none is skipped")
        if len(bad) and not len(good):
            _notify_all_rejected(conn, settings, step, batch_id, slot, x, reasons[reasons != ""])

    return run_step(conn, trigger, STEP, body, params=params)
