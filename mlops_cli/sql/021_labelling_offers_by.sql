-- 021: who a prediction was first offered to by the labelling queue (the signed-in labeller of the
-- Labelling page, or the API token's name): an offer changes what performance drift counts, so it
-- names who made it, like every action. NULL for the offers before.

ALTER TABLE labelling_offers ADD COLUMN offered_to TEXT;
