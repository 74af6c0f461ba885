-- Operator lifecycle (issue 12, item 10): a bearer token may expire. NULL: it
-- does not expire. Epoch milliseconds, like every other time in this schema.
ALTER TABLE operators ADD COLUMN expires_at bigint;

-- Issue 12, item 9: the last time this node reached each peer (a delivery with
-- a verified receipt, or its keyset fetched) and the last failure, in plain
-- words ("connection refused"), for `handover peers list`.
ALTER TABLE peers
    ADD COLUMN last_success_at bigint,
    ADD COLUMN last_failure    text,
    ADD COLUMN last_failure_at bigint;
