-- The event feed (GET /api/v1/events) and its webhooks (docs/integrators.md).
--
-- An event is written in the same transaction as the state change it reports,
-- always under the audit lock, so ids are handed out in commit order and a
-- reader that resumes after id N misses nothing. Events carry identifiers and
-- types only, never body values.
CREATE TABLE events (
    id        bigserial PRIMARY KEY,
    kind      text   NOT NULL,
    at        bigint NOT NULL,
    pid       text,
    case_ref  text,
    node      text,
    schema_id text,
    status    text
);
CREATE INDEX events_at ON events (at);

-- How far retention has deleted: a cursor below this is answered `cursor_expired`.
CREATE TABLE events_horizon (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    pruned_through bigint NOT NULL
);
INSERT INTO events_horizon (pruned_through) VALUES (0);

-- Webhook targets, configured by an admin (`handover webhooks add`). The shared
-- secret is stored sealed with the node's storage key (keys/storage.key).
CREATE TABLE webhooks (
    id          bigserial PRIMARY KEY,
    url         text    NOT NULL CHECK (url ~ '^https?://'),
    kinds       text[]  NOT NULL,
    secret_box  bytea   NOT NULL,
    created_at  bigint  NOT NULL
);

-- The durable queue: one row per (webhook, event) until the receiver answered 2xx.
CREATE TABLE webhook_queue (
    webhook_id bigint  NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id   bigint  NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempts   integer NOT NULL DEFAULT 0,
    next_at    bigint  NOT NULL,
    last_error text,
    failed_at  bigint,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_queue_due ON webhook_queue (next_at) WHERE failed_at IS NULL;

-- Overdue items are reported once per expectation.
ALTER TABLE expectations ADD COLUMN overdue_noted boolean NOT NULL DEFAULT false;

-- Case management systems act for a member of staff (Handover-On-Behalf-Of).
ALTER TABLE operators DROP CONSTRAINT operators_role_check;
ALTER TABLE operators ADD CONSTRAINT operators_role_check
    CHECK (role IN ('admin', 'caseworker', 'auditor', 'system'));
