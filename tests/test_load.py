"""The weekly load on a real PostgreSQL: format, validation, idempotency, concurrency, crash recovery."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import query, wait_for
from mlops_cli import store
from mlops_cli.runs import Trigger
from mlops_cli.steps.load import load


def write_pair(folder: Path, rows: list[dict], y_override: list | None = None) -> tuple[Path, Path]:
    """Files exactly as published: unnamed index column, csv quoting, UTF-8."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = folder / "X_train_update.csv", folder / "Y_train_CVw08PX.csv"
    with open(x, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "designation", "description", "productid", "imageid"])
        for i, r in enumerate(rows):
            w.writerow([i, r["designation"], r.get("description", ""), r["productid"], r.get("imageid", 1000 + i)])
    with open(y, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "prdtypecode"])
        for i, r in enumerate(y_override if y_override is not None else rows):
            w.writerow([i, r["prdtypecode"] if isinstance(r, dict) else r])
    return x, y


def valid_rows(n: int, start: int = 100000) -> list[dict]:
    codes = [10, 40, 2583, 1280, 2705]
    return [{"designation": f"Produit numéro {i}", "description": "", "productid": start + i,
             "prdtypecode": codes[i % len(codes)]} for i in range(n)]


TRICKY = 'Livre "rare", relié,\nvoir <p>photos</p> &eacute;tat <br />neuf & complet'


def counts(conn):
    return store.table_counts(conn, ["products", "load_batches", "rejected_rows"])


def test_real_format_with_quotes_commas_newlines_and_html(tmp_path, settings, conn):
    rows = valid_rows(10)
    rows[3]["description"] = TRICKY
    rows[4]["designation"] = 'Tome 3, "N° 69" <b>collector</b>'
    x, y = write_pair(tmp_path / "src", rows)
    settings = settings.replace(initial_load_fraction=1.0)
    result = load(conn, settings, Trigger(actor="t"), x_path=str(x), y_path=str(y))
    assert result.status == "succeeded"
    assert result.outputs["rows_loaded"] == 10 and result.outputs["rows_rejected"] == 0
    stored = dict(query(conn, "SELECT productid, description FROM products"))
    assert stored[100003] == TRICKY
    assert query(conn, "SELECT designation FROM products WHERE productid = 100004")[0][0] == \
        'Tome 3, "N° 69" <b>collector</b>'


def test_every_rejection_reason_is_kept_with_the_raw_row(tmp_path, settings, conn):
    rows = valid_rows(8)
    rows[0]["designation"] = "   "
    rows[1]["prdtypecode"] = 9999
    rows[2]["prdtypecode"] = "abc"
    rows[3]["productid"] = "12x"
    rows[4]["imageid"] = "img"
    rows[5]["productid"] = rows[6]["productid"]  # duplicate inside the source
    x, y = write_pair(tmp_path / "src", rows)
    result = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    assert result.outputs["rows_loaded"] == 2  # row 7, and one of the duplicated pair 5/6
    reasons = dict(query(conn, "SELECT source_index, reason FROM rejected_rows"))
    dup_index = "5" if "6" not in reasons else "6"
    assert reasons == {
        "0": "empty designation (title)",
        "1": "unknown prdtypecode 9999",
        "2": "unparsable prdtypecode 'abc'",
        "3": "unparsable productid '12x'",
        "4": "unparsable imageid 'img'",
        dup_index: f"duplicate productid 100006 (also at source index {'6' if dup_index == '5' else '5'})",
    }
    raw = query(conn, "SELECT raw FROM rejected_rows WHERE reason LIKE 'unknown%'")[0][0]
    assert raw["designation"] == "Produit numéro 1" and raw["prdtypecode"] == "9999"

    # a product already in the catalogue is rejected in a later batch, naming the batch
    again = valid_rows(2, start=100006)
    x2, y2 = write_pair(tmp_path / "src2", again)
    r2 = load(conn, settings.replace(initial_load_fraction=1.0, load_fraction=1.0), Trigger(),
              x_path=str(x2), y_path=str(y2), force=True)
    batch1 = query(conn, "SELECT min(id) FROM load_batches")[0][0]
    assert r2.outputs["rows_rejected"] >= 1
    assert query(conn, "SELECT reason FROM rejected_rows WHERE batch_id = %s ORDER BY id",
                 (r2.outputs["batch_id"],))[0][0] == f"duplicate productid 100006 (already loaded in batch {batch1})"


def test_values_as_other_tools_write_them_are_read_as_the_same_value(tmp_path, settings, conn):
    """Codes saved by pandas or a spreadsheet (10.0, +10, padded, leading zeros) are their integer;
    a productid with leading zeros is the same product as without them."""
    rows = valid_rows(10)
    for i, code in enumerate(["10.0", " 2583 ", "+40", "0010", "2583.00", "1e1", "10.5", "+-3"]):
        rows[i]["prdtypecode"] = code
    rows[8]["productid"] = "0" + str(rows[9]["productid"])  # the same product as row 9
    x, y = write_pair(tmp_path / "src", rows)
    result = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    stored = dict(query(conn, "SELECT productid, prdtypecode FROM products"))
    assert {k: stored[100000 + k] for k in range(5)} == {0: 10, 1: 2583, 2: 40, 3: 10, 4: 2583}
    reasons = dict(query(conn, "SELECT source_index, reason FROM rejected_rows"))
    pid = rows[9]["productid"]
    dup = reasons.pop("8", None) or reasons.pop("9")
    assert dup in (f"duplicate productid 0{pid} (also at source index 9)",
                   f"duplicate productid {pid} (also at source index 8)")
    assert reasons == {"5": "unparsable prdtypecode '1e1'", "6": "unparsable prdtypecode '10.5'",
                       "7": "unparsable prdtypecode '+-3'"}
    assert (result.outputs["rows_loaded"], result.outputs["rows_rejected"]) == (6, 4)
    # the rejected row keeps the code as the file wrote it
    assert query(conn, "SELECT raw->>'prdtypecode' FROM rejected_rows WHERE source_index = '6'")[0][0] == "10.5"


@pytest.mark.parametrize("short_row, shifted_productid", [
    ("2,Console Nintendo Switch,201115110,1263597099\n", 1263597099),  # its description field lost
    ("2,Console Nintendo Switch,,2011", 2011),  # the file cut (or still being written) in its productid
])
def test_a_row_that_lost_a_field_is_rejected_not_loaded_with_its_fields_shifted(tmp_path, settings, conn, short_row,
                                                                                shifted_productid):
    """A record with fewer fields than the header: pandas pads it on the right, so its imageid
    was read as its productid (or a file cut in its last row loaded a fragment as a product). It
    is rejected, naming its line and why, and the other rows load."""
    folder = tmp_path / "src"
    folder.mkdir()
    x, y = folder / "X_train_update.csv", folder / "Y_train_CVw08PX.csv"
    x.write_text(",designation,description,productid,imageid\n"
                 '0,"Livre ""rare"", relié","<p>Très bon état,\nvoir photos</p>",3804725264,1263597046\n'
                 "1,Peluche lapin,,436067568,1008141237\n" + short_row, encoding="utf-8")
    y.write_text(",prdtypecode\n0,10\n1,1280\n2,60\n", encoding="utf-8")
    r = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(actor="t"), x_path=str(x), y_path=str(y))
    assert (r.outputs["rows_loaded"], r.outputs["rows_rejected"]) == (2, 1)
    assert sorted(p for (p,) in query(conn, "SELECT productid FROM products")) == [436067568, 3804725264]
    assert query(conn, "SELECT source_index, reason, raw ? 'field_problem' FROM rejected_rows") == [
        ("2", "X line 5 has 4 fields, the header 5: a field is missing, so the values after it would be read "
              "into the wrong columns (or the file ends in this row)", False)]
    assert shifted_productid not in [p for (p,) in query(conn, "SELECT productid FROM products")]


def test_rows_postgresql_cannot_hold_or_the_model_cannot_read_are_rejected_not_fatal(tmp_path, settings, conn):
    """A NUL byte would fail the whole COPY; fullwidth digits are not a productid; a title of
    markup only has nothing for the model. Each is one rejected row with its reason."""
    rows = valid_rows(7)
    rows[0]["description"] = "avant\x00apr\u00e8s"
    rows[1]["productid"] = "\uff11\uff12\uff13"
    rows[2]["designation"] = "<br/>&nbsp;"
    rows[3]["designation"] = "---"
    rows[4]["designation"] = "Poids < 2 kg, enfants > 3 ans"  # text, not a tag: loaded
    rows[6]["prdtypecode"] = 9999
    x, y = write_pair(tmp_path / "src", rows)
    for path in (x, y):  # a NUL in the index column of both files (row 6)
        path.write_bytes(path.read_bytes().replace(b"\n6,", b"\n6\x00,"))
    result = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    assert result.status == "succeeded"
    reasons = dict(query(conn, "SELECT source_index, reason FROM rejected_rows"))
    assert reasons == {
        "0": "NUL character in description",
        "1": "unparsable productid '\uff11\uff12\uff13'",
        "2": "designation (title) has no letter or digit once cleaned: '<br/>&nbsp;'",
        "3": "designation (title) has no letter or digit once cleaned: '---'",
        "6\ufffd": "unknown prdtypecode 9999",
    }
    assert query(conn, "SELECT raw->>'description' FROM rejected_rows WHERE source_index = '0'")[0][0] == \
        "avant\ufffdapr\u00e8s"
    assert sorted(r[0] for r in query(conn, "SELECT productid FROM products")) == [100004, 100005]


def test_a_rejected_first_copy_does_not_make_a_good_second_copy_a_duplicate(tmp_path, settings, conn):
    rows = valid_rows(4)
    rows[1]["productid"] = rows[0]["productid"]
    rows[0]["prdtypecode"] = 9999  # the same product twice, once with a bad code
    rows[3]["productid"] = rows[2]["productid"]
    rows[2]["designation"] = ""
    x, y = write_pair(tmp_path / "src", rows)
    load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    assert dict(query(conn, "SELECT productid, prdtypecode FROM products")) == {100000: 40, 100002: 1280}
    assert dict(query(conn, "SELECT source_index, reason FROM rejected_rows")) == {
        "0": "unknown prdtypecode 9999", "2": "empty designation (title)"}


def test_a_first_copy_rejected_in_an_earlier_batch_does_not_make_a_later_copy_a_duplicate(tmp_path, settings, conn):
    """Copy A of a product is rejected by one batch (its title over MAX_TITLE_CHARS), the limit is
    then raised: A is valid now but was never loaded, so copy B, in the next batch, is loaded
    (before, B was refused as A's duplicate and the product never reached the catalogue)."""
    from mlops_cli.sources import seeded_order

    rows = valid_rows(20)
    order = list(seeded_order(pd.Series([str(r["productid"]) for r in rows]), settings.load_seed))
    rank = 12
    twin = dict(rows[order[rank]])
    rows[order[rank]]["designation"] = "Un titre de trente et un signes"  # copy A: 31 characters
    rows.append(twin)  # copy B, later in the file: right after A in load order (ties keep file order)
    x, y = write_pair(tmp_path / "src", rows)
    first = load(conn, settings.replace(max_title_chars=30, initial_load_fraction=(rank + 0.5) / len(rows)),
                 Trigger(), x_path=str(x), y_path=str(y))
    assert (first.outputs["end_offset"], first.outputs["rows_rejected"]) == (rank + 1, 1)
    second = load(conn, settings.replace(load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert second.outputs["rows_rejected"] == 0, query(conn, "SELECT reason FROM rejected_rows")
    assert query(conn, "SELECT designation FROM products WHERE productid = %s", (twin["productid"],)) == \
        [(twin["designation"],)]


def test_x_and_y_in_different_row_orders_are_matched_by_their_index(tmp_path, settings, conn):
    rows = valid_rows(6)
    x, y = write_pair(tmp_path / "src", rows)
    header, *lines = y.read_text().splitlines()
    y.write_text("\n".join([header, *reversed(lines)]) + "\n")
    result = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    assert result.outputs["rows_loaded"] == 6
    assert dict(query(conn, "SELECT productid, prdtypecode FROM products")) == \
        {r["productid"]: r["prdtypecode"] for r in rows}


def test_the_next_batch_continues_whatever_the_path_spelling(tmp_path, settings, conn, monkeypatch):
    """Relative, absolute or through a symlink: one file, so the next batch starts where the last
    ended (before, a new spelling started again at 0, every row a duplicate, the week spent)."""
    x, y = write_pair(tmp_path / "src", valid_rows(100))
    s = settings.replace(initial_load_fraction=0.4, load_fraction=0.1)
    monkeypatch.chdir(tmp_path)
    load(conn, s, Trigger(), x_path="src/X_train_update.csv", y_path="src/Y_train_CVw08PX.csv")
    (tmp_path / "link").symlink_to(tmp_path / "src")
    r = load(conn, s, Trigger(), x_path=str(tmp_path / "link" / x.name), y_path=str(tmp_path / "link" / y.name),
             force=True)
    assert (r.outputs["start_offset"], r.outputs["end_offset"], r.outputs["rows_rejected"]) == (40, 50, 0)
    # a batch recorded with a relative path before paths were resolved is found too
    with conn.cursor() as cur:
        cur.execute("UPDATE load_batches SET source_x = 'src/X_train_update.csv'")
    conn.commit()
    r = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert (r.outputs["start_offset"], r.outputs["end_offset"]) == (50, 60)
    assert query(conn, "SELECT source_x FROM load_batches ORDER BY id DESC LIMIT 1") == [(str(x.resolve()),)]


def test_a_source_that_changes_at_the_same_path_loads_every_product_once(tmp_path, settings, conn):
    """Offsets are positions in the load order of one set of products: a file that grew (the
    full catalogue downloaded over a sample) or was replaced is taken in its new order, without
    the products it gave before; before, the new products hashed before the old offset were never
    loaded. Back to the first file, nothing is left to take."""
    s = settings.replace(initial_load_fraction=0.5, load_fraction=0.5)
    small = valid_rows(100)
    x, y = write_pair(tmp_path / "src", small)
    first = load(conn, s, Trigger(), x_path=str(x), y_path=str(y))
    assert (first.outputs["start_offset"], first.outputs["end_offset"], first.outputs["rows_loaded"]) == (0, 50, 50)
    assert "source_changed" not in first.outputs
    write_pair(tmp_path / "src", small + valid_rows(100, start=500000))  # the same path, 200 rows now
    grown = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
    changed = grown.outputs["source_changed"]
    assert (changed["since_batch"], changed["rows_then"], changed["rows_now"]) == (first.outputs["batch_id"], 100, 200)
    assert (grown.outputs["start_offset"], grown.outputs["rows_loaded"], grown.outputs["rows_rejected"]) == (0, 100, 0)
    assert grown.outputs["end_offset"] == 100 + changed["skipped_loaded_before"]  # the 50 given before passed over
    assert grown.message.endswith(
        f"; X_train_update.csv changed since batch #{first.outputs['batch_id']} (100 rows then, 200 now, or other "
        f"products): its rows are taken in the new order, without the products it gave before or the rows it "
        f"refused ({changed['skipped_loaded_before']} passed over here), so none is skipped")
    again = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert (again.outputs["start_offset"], again.outputs["end_offset"]) == (grown.outputs["end_offset"], 200)
    assert (again.outputs["rows_loaded"], again.outputs["rows_rejected"]) == (50, 0) and "source_changed" not in again.outputs
    assert load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True).status == "skipped"  # exhausted
    assert query(conn, "SELECT count(*) FROM products")[0][0] == 200  # every product, once
    assert query(conn, "SELECT count(*) FROM rejected_rows")[0][0] == 0
    write_pair(tmp_path / "src", small)  # the first file back: all its products are in
    back = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert back.status == "skipped" and back.message.startswith("source exhausted: all 100 rows")


def test_batches_from_before_the_source_key_continue_only_in_their_own_order(tmp_path, settings, conn):
    """A batch recorded before migration 018 has no key: the next load continues its offsets when
    its products all stand before its end in the order the file has now; under another LOAD_SEED
    (the same size, another order) it is a change, and no product is skipped."""
    s = settings.replace(initial_load_fraction=0.3, load_fraction=0.3)
    x, y = write_pair(tmp_path / "src", valid_rows(100))
    load(conn, s, Trigger(), x_path=str(x), y_path=str(y))
    query(conn, "UPDATE load_batches SET source_key = NULL RETURNING id")
    conn.commit()
    go_on = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert (go_on.outputs["start_offset"], go_on.outputs["end_offset"]) == (30, 60)
    assert "source_changed" not in go_on.outputs
    query(conn, "UPDATE load_batches SET source_key = NULL RETURNING id")
    conn.commit()
    reseeded = load(conn, s.replace(load_seed=s.load_seed + 1), Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert reseeded.outputs["start_offset"] == 0 and "source_changed" in reseeded.outputs
    assert (reseeded.outputs["rows_loaded"], reseeded.outputs["rows_rejected"]) == (30, 0)
    assert query(conn, "SELECT count(*) FROM products")[0][0] == 90


def test_a_source_that_grows_every_week_keeps_moving(tmp_path, settings, conn):
    """A file that gets a few products before each load (a feed appended to in place): every load
    takes products not loaded yet, none is refused as already loaded, and the catalogue ends with
    every product."""
    s = settings.replace(initial_load_fraction=0.1, load_fraction=0.1)
    rows = valid_rows(100)
    rows[5]["prdtypecode"] = 9999  # one bad row: refused once, not at every change of the file
    x, y = write_pair(tmp_path / "src", rows)
    taken = []
    for week in range(8):
        r = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
        assert r.status == "succeeded" and not r.outputs.get("all_rejected"), r.message
        taken.append(r.outputs["rows_loaded"] + r.outputs["rows_rejected"])
        rows = rows + valid_rows(1, start=700000 + week)
        write_pair(tmp_path / "src", rows)
    assert taken == [10] + [11] * 7  # ceil(10% of the rows then)
    while load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True).status == "succeeded":
        pass
    assert query(conn, "SELECT count(*) FROM products")[0][0] == len(rows) - 1 == 107
    assert query(conn, "SELECT reason FROM rejected_rows") == [("unknown prdtypecode 9999",)]


def test_oversized_fields_are_rejected_with_their_length_not_loaded(tmp_path, settings, conn):
    """The default caps reject a 5,000,000-character description; the rejected row keeps a cut
    copy of it (not megabytes), the reason names the field, its length and the setting."""
    rows = valid_rows(4)
    rows[0]["description"] = "x" * 5_000_000
    rows[1]["designation"] = "T" * 1001
    rows[2]["designation"] = "T" * 1000  # at the limit: loaded
    x, y = write_pair(tmp_path / "src", rows)
    result = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    assert (result.outputs["rows_loaded"], result.outputs["rows_rejected"]) == (2, 2)
    assert sorted(r[0] for r in query(conn, "SELECT productid FROM products")) == [100002, 100003]
    rejected = {i: (reason, raw) for i, raw, reason in query(conn, "SELECT source_index, raw, reason FROM rejected_rows")}
    assert rejected["0"][0] == "description too long: 5,000,000 characters (limit 100,000, MAX_DESCRIPTION_CHARS)"
    assert rejected["1"][0] == "designation too long: 1,001 characters (limit 1,000, MAX_TITLE_CHARS)"
    kept = rejected["0"][1]["description"]
    assert kept.startswith("x" * 1000) and kept.endswith("[5,000,000 characters, cut to 1,000 here]")
    assert len(kept) < 1100 and rejected["0"][1]["designation"] == "Produit numéro 0"


def test_field_caps_are_settings(tmp_path, cli, monkeypatch):
    rows = valid_rows(3)
    rows[0]["designation"] = "Un titre de trente et un signes"  # 31 characters
    x, y = write_pair(tmp_path / "src", rows)
    monkeypatch.setenv("MAX_TITLE_CHARS", "30")
    monkeypatch.setenv("INITIAL_LOAD_FRACTION", "1")
    r = cli("load", "--x-path", x, "--y-path", y)
    assert r.exit_code == 0, r.output
    assert "2 rows loaded, 1 rejected" in r.output
    assert query(os.environ["DATABASE_URL"], "SELECT reason FROM rejected_rows") == \
        [("designation too long: 31 characters (limit 30, MAX_TITLE_CHARS)",)]


def test_header_names_with_spaces_around_them_are_the_columns(tmp_path, settings, conn):
    """A header typed by hand or saved by a spreadsheet (`, designation, description`,
    `prdtypecode `) names the same columns. Before: `missing column(s) prdtypecode (found:
    prdtypecode ; ...)`, a column the header visibly has."""
    x, y = write_pair(tmp_path / "src", valid_rows(4))
    lines = x.read_text().splitlines()
    x.write_text("\n".join([lines[0].replace(",", ", ")] + lines[1:]) + "\n")
    y.write_text(y.read_text().replace(",prdtypecode", ",prdtypecode \ufeff", 1))
    r = load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    assert (r.status, r.outputs["rows_loaded"]) == ("succeeded", 4)


@pytest.mark.parametrize("problem, message", [
    ("missing_column", "X file {x} is missing column(s) description (found: designation, productid, imageid;"),
    ("encoding", "X file {x} is not valid UTF-8 (byte b'\\xe9' at offset 57, line 2 of the file)"),
    ("mismatch", "do not line up by their index column: 1 index value(s) only in X (first: '3')"),
    ("missing_file", "Y file not found: {y}"),
    ("semicolons", "(found: none; expected an index column then designation, description, productid, imageid); the "
                   "header looks separated by ';': the catalogue's CSV files are comma-separated"),
    # the same, with a comma in a text: pandas fails before the columns are checked
    ("semicolons_and_a_comma", "X file {x} is not a readable CSV: line 3 has 2 fields, the header 1 (a comma "
                               "inside an unquoted text?); the header looks separated by ';': the catalogue's "
                               "CSV files are comma-separated"),
    ("extra_field", "X file {x} is not a readable CSV: line 4 has 6 fields, the header 5 (a comma inside an "
                    "unquoted text?)"),
    # pandas stops at the fields before it decodes: the encoding is still what is named
    ("latin1_and_extra_field", "X file {x} is not valid UTF-8 (byte b'\\xe9' at offset 56, line 2 of the file)"),
    # a stray opening quote: the field runs on over the next rows, which X then lacks
    ("stray_quote", "do not line up by their index column: 2 index value(s) only in Y (first: '2'); X line 3: the "
                    "quote opened in the designation of the row at index '1' is not closed where that field ends, "
                    "so the field runs on over the rows after it (the row at index '2' is inside it): close or "
                    "double that quote"),
    # a download cut inside a long quoted description: pandas' own words name "row 4"
    ("cut_in_a_quoted_field", "X file {x} is not a readable CSV: the file ends inside a quoted field of the record "
                              "that starts at line 6 (a file cut short, or a quote never closed)"),
    # saved again with to_csv(index=False): pandas takes prdtypecode for the index
    ("no_index_column", "Y file {y} has no index column: its first column is 'prdtypecode', which the catalogue's "
                        "files have second (expected an unnamed index column, then prdtypecode; a file saved with "
                        "index=False?)"),
])
def test_bad_file_fails_whole_step_and_leaves_tables_unchanged(tmp_path, settings, conn, problem, message):
    x, y = write_pair(tmp_path / "ok", valid_rows(4))
    load(conn, settings, Trigger(), x_path=str(x), y_path=str(y), as_of=None)
    before = counts(conn)
    bad = tmp_path / "bad"
    bx, by = write_pair(bad, valid_rows(4))
    if problem == "missing_column":
        text = bx.read_text().replace(",description", "").splitlines()
        bx.write_text("\n".join(line.rsplit(",", 3)[0] + "," + ",".join(line.rsplit(",", 3)[2:])
                                if i else line for i, line in enumerate(text)) + "\n")
    elif problem == "encoding":
        bx.write_bytes(bx.read_bytes().replace("numéro".encode(), "numéro".encode("latin-1")))
    elif problem == "mismatch":
        by.write_text("\n".join(by.read_text().splitlines()[:-1]) + "\n")
    elif problem == "missing_file":
        by.unlink()
    elif problem == "semicolons":  # saved again by a spreadsheet set to French
        bx.write_text(bx.read_text().replace(",", ";"))
    elif problem == "semicolons_and_a_comma":
        bx.write_text(bx.read_text().replace(",", ";").replace("Produit numéro 1;", "Produit numéro 1, rouge;"))
    elif problem == "stray_quote":
        lines = bx.read_text().splitlines()
        lines[2] = lines[2].replace("Produit", '"Produit', 1)
        lines[4] = lines[4].replace("Produit numéro 3", 'Produit "numéro" 3')  # where pandas closes it
        bx.write_text("\n".join(lines) + "\n")
    elif problem == "cut_in_a_quoted_field":
        bx.write_text(bx.read_text() + '4,Livre ancien,"<p>Très bon état,\nvoir les photos, couverture')
    elif problem == "no_index_column":
        by.write_text("prdtypecode\n" + "".join(line.split(",", 1)[1] + "\n" for line in by.read_text().splitlines()[1:]))
    elif problem in ("extra_field", "latin1_and_extra_field"):
        lines = bx.read_text().splitlines()
        lines[3] += ",de trop"
        bx.write_text("\n".join(lines) + "\n")
        if problem == "latin1_and_extra_field":
            bx.write_bytes(bx.read_bytes().replace("numéro".encode(), "numéro".encode("latin-1")))
    from mlops_cli.runs import StepFailed

    with pytest.raises(StepFailed) as info:
        load(conn, settings, Trigger(), x_path=str(bx), y_path=str(by), force=True)
    assert message.format(x=bx, y=by) in info.value.result.message
    assert counts(conn) == before
    assert query(conn, "SELECT status, error FROM pipeline_runs ORDER BY id DESC LIMIT 1")[0][0] == "failed"


def test_initial_then_weekly_fractions_and_as_of_idempotency(small_catalogue, cli, conn):
    x, y = small_catalogue
    r = cli("load", "--x-path", x, "--y-path", y, "--as-of", "2026-01-05")
    assert r.exit_code == 0, r.output
    assert "rows loaded" in r.output
    assert query(conn, "SELECT count(*) FROM products")[0][0] + \
        query(conn, "SELECT count(*) FROM rejected_rows")[0][0] == 1200  # 40% of 3,000
    # same ISO week: nothing loaded, says so, exit 0
    r = cli("load", "--x-path", x, "--y-path", y, "--as-of", "2026-01-08")
    assert r.exit_code == 0
    assert "[skipped] load" in r.output and "week 2026-W02 already loaded (batch #1" in r.output
    assert query(conn, "SELECT count(*) FROM load_batches")[0][0] == 1
    # next week: +3%
    r = cli("load", "--x-path", x, "--y-path", y, "--as-of", "2026-01-12", "--json")
    assert r.exit_code == 0
    assert query(conn, "SELECT start_offset, end_offset, kind FROM load_batches ORDER BY id") == \
        [(0, 1200, "initial"), (1200, 1290, "incremental")]
    # --force in the same week loads another batch
    r = cli("load", "--x-path", x, "--y-path", y, "--as-of", "2026-01-13", "--force")
    assert r.exit_code == 0 and query(conn, "SELECT count(*) FROM load_batches")[0][0] == 3
    # stable seeded order: the loaded set does not depend on the file's row order
    ids = {r[0] for r in query(conn, "SELECT productid FROM products WHERE batch_id = 1")}
    assert len(ids) > 1000


def test_source_exhausted_is_skipped(tmp_path, settings, conn):
    x, y = write_pair(tmp_path / "src", valid_rows(5))
    s = settings.replace(initial_load_fraction=1.0)
    assert load(conn, s, Trigger(), x_path=str(x), y_path=str(y)).status == "succeeded"
    r = load(conn, s, Trigger(), x_path=str(x), y_path=str(y), force=True)
    assert r.status == "skipped"
    assert r.message == "source exhausted: all 5 rows of X_train_update.csv are loaded; nothing to load"


def test_no_source_configured_is_a_clear_error(cli):
    r = cli("load")
    assert r.exit_code == 1
    assert r.output.startswith("Error: No source catalogue: pass --x-path and --y-path")


def _mlops(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "mlops_cli.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_concurrent_loads_make_exactly_one_batch(small_catalogue, conn):
    x, y = small_catalogue
    procs = [_mlops("load", "--x-path", x, "--y-path", y, "--as-of", "2026-02-02") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert query(conn, "SELECT count(*) FROM load_batches")[0][0] == 1
    statuses = sorted(r[0] for r in query(conn, "SELECT status FROM pipeline_runs WHERE step = 'load'"))
    assert statuses == ["skipped", "succeeded"]
    text = " ".join(o for o, _ in outs)
    assert ("another load run is in progress" in text) or ("already loaded" in text)


def test_killed_run_is_marked_abandoned_next_time(small_catalogue, conn, settings):
    x, y = small_catalogue
    env = dict(os.environ, MLOPS_FAULT="load:hang")
    p = _mlops("load", "--x-path", x, "--y-path", y, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if query(conn, "SELECT count(*) FROM pipeline_runs WHERE status = 'running'")[0][0]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step never started: " + p.communicate()[1])
    backend, = query(conn, "SELECT backend_pid FROM pipeline_runs WHERE status = 'running'")[0]
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    # the server notices the closed connection in its own time: wait for that, not a fixed delay
    wait_for(lambda: not query(conn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)),
             "the killed run's database session to end")
    r = load(conn, settings, Trigger(), x_path=str(x), y_path=str(y))
    assert r.status == "succeeded"
    rows = query(conn, "SELECT status, error FROM pipeline_runs ORDER BY id")
    assert rows[0][0] == "failed" and rows[0][1].startswith("abandoned:")
    assert query(conn, "SELECT count(*) FROM load_batches")[0][0] == 1
