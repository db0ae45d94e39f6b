-- 017: the labelling queue's rule for a labelled prediction changed: a label hides the prediction
-- it is tied to, its product and its text, no longer every prediction sharing its request_id
-- (docs/API.md "The labelling queue"). Lists stored under the old rule can miss predictions that
-- are candidates now, so they are forgotten: the queue scans those days until the next `rollup`
-- step stores them again (derived data: nothing is lost).

DELETE FROM labelling_candidate_days;
