-- 018: what a batch's offsets are positions in (docs/PIPELINE.md, "The source changes").
--
-- load_batches.source_key  sha256 of LOAD_SEED and the source's productids in the load order
--                          (sources.seeded_order): offsets name the same products only while
--                          it is the same. A source that grew, shrank or was replaced at the same
--                          path (or another LOAD_SEED) has another key: it is taken in its new
--                          order, without the products it gave under another key (nor the rows
--                          refused then, still invalid), so none is skipped or refused as
--                          already loaded. NULL for the batches before:
--                          they count as this order while their products stand in their window.

ALTER TABLE load_batches ADD COLUMN source_key TEXT;
