-- Sent packets listed newest first, page by page (GET /api/v1/packets).
CREATE INDEX outbox_created ON outbox (created_at DESC, pid DESC);
-- ... filtered by a delivery state that few packets are in (rejected, expired).
CREATE INDEX deliveries_status ON deliveries (status, pid);

-- The receiving side of continuity of care: answers this node owes to a
-- sender for a packet it received (the sender's node holds the same as an
-- `expectations` row). Answered when this node sends one of `schemas` on the
-- case to that sender. Identifiers and times only.
CREATE TABLE owed (
    sender       text   NOT NULL,
    pid          text   NOT NULL,
    case_ref     text   NOT NULL,
    schemas      text[] NOT NULL,
    deadline     bigint NOT NULL,
    created_at   bigint NOT NULL,
    answered_pid text,
    answered_at  bigint,
    PRIMARY KEY (sender, pid)
);
CREATE INDEX owed_open ON owed (deadline, sender, pid) WHERE answered_pid IS NULL;
