-- Workflow: cases, consent, continuity-of-care expectations, responsibility
-- agreements, and the retention / restriction / erasure state of held packets.

CREATE TABLE cases (
    case_ref        text PRIMARY KEY,
    local_id        text,
    created_at      bigint NOT NULL,
    first_pid       text   NOT NULL,
    release_date    text,
    supervision_end text,
    updated_at      bigint NOT NULL
);
CREATE UNIQUE INDEX cases_local_id ON cases (local_id) WHERE local_id IS NOT NULL;

-- Every consent-record this node sent or received; the newest per (case, scope) holds.
CREATE TABLE consents (
    id          bigserial PRIMARY KEY,
    case_ref    text   NOT NULL,
    scope       text   NOT NULL,
    state       text   NOT NULL CHECK (state IN ('GIVEN', 'WITHDRAWN')),
    consent_id  text   NOT NULL,
    basis       text   NOT NULL,
    pid         text   NOT NULL,
    author      text   NOT NULL,
    recorded_at bigint NOT NULL
);
CREATE INDEX consents_case ON consents (case_ref, scope, id);

-- A packet that opened an expectation of an answer from a recipient by a deadline.
CREATE TABLE expectations (
    pid           text   NOT NULL,
    node          text   NOT NULL,
    case_ref      text   NOT NULL,
    schemas       text[] NOT NULL,
    deadline      bigint NOT NULL,
    created_at    bigint NOT NULL,
    satisfied_pid text,
    satisfied_at  bigint,
    PRIMARY KEY (pid, node)
);
CREATE INDEX expectations_open ON expectations (deadline) WHERE satisfied_pid IS NULL;

CREATE TABLE agreements (
    case_ref     text    NOT NULL,
    agreement_id text    NOT NULL,
    revision     integer NOT NULL,
    pid          text    NOT NULL,
    author       text    NOT NULL,
    parties      text[]  NOT NULL,
    valid_from   text    NOT NULL,
    valid_to     text,
    recorded_at  bigint  NOT NULL,
    PRIMARY KEY (case_ref, agreement_id, revision)
);

CREATE TABLE agreement_acks (
    case_ref        text    NOT NULL,
    agreement_id    text    NOT NULL,
    revision        integer NOT NULL,
    node            text    NOT NULL,
    acknowledged_at text    NOT NULL,
    pid             text    NOT NULL,
    PRIMARY KEY (case_ref, agreement_id, revision, node)
);

-- Sent packets keep the view that was sealed (encrypted at rest) for subject
-- access and rectification, the fields it disclosed, and the consent it used.
ALTER TABLE outbox
    ADD COLUMN body_box      bytea,
    ADD COLUMN fields        text[],
    ADD COLUMN removed       text[],
    ADD COLUMN consents      text[],
    ADD COLUMN review_at     bigint,
    ADD COLUMN restricted    text,
    ADD COLUMN erased_at     bigint;

ALTER TABLE received
    ADD COLUMN review_at     bigint,
    ADD COLUMN restricted    text,
    ADD COLUMN erased_at     bigint,
    ADD COLUMN rectified_by  text;

CREATE INDEX outbox_case ON outbox (case_ref);
CREATE INDEX received_case ON received (case_ref);
CREATE INDEX outbox_review ON outbox (review_at) WHERE erased_at IS NULL;
CREATE INDEX received_review ON received (review_at) WHERE erased_at IS NULL;
