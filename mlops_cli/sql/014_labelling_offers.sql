-- 014: which predictions the labelling queue offered (docs/API.md "The labelling queue").
--
-- The queue offers the predictions most likely wrong, so its labels are not a sample of the
-- traffic: scored as if they were, they read as a performance drop on traffic that did not change.
-- Performance drift leaves out a label given after its prediction was offered; the estimate's
-- realized-vs-estimated comparison keeps it (it conditions on each row's confidence).
-- One row per prediction, the first time it was offered; pruned by retention.

CREATE TABLE labelling_offers (
    inference_id  BIGINT PRIMARY KEY,
    offered_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX labelling_offers_at ON labelling_offers (offered_at);
