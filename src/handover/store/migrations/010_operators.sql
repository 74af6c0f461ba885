-- Operator lifecycle (issue 12, item 10): a bearer token may expire. NULL: it
-- does not expire. Epoch milliseconds, like every other time in this schema.
ALTER TABLE operators ADD COLUMN expires_at bigint;
