-- 018: what a batch's offsets are positions in (docs/PIPELINE.md, "The source changes").
--
-- load_batches.source_key  sha256 of LOAD_SEED and the source's productids in the load order
--                          (sources.seeded_order): offsets name the same products only while
--                          it is the same. A source that grew, shrank or was replaced at the same
--                          path (or another LOAD_SEED) has another key, and its offsets start
--                          again: the products already loaded are rejected as such, none is
--                          skipped. NULL for the batches before: they match on source_rows.

ALTER TABLE load_batches ADD COLUMN source_key TEXT;
