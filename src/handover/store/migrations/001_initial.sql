-- handover node schema, version 1. Times are integer milliseconds since the epoch.

-- The append-only audit hash chain (docs/protocol.md section 5). `entry` holds the
-- exact CJ bytes that were hashed; `head` is head_seq.
CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY CHECK (seq >= 1),
    at        bigint NOT NULL,
    op        text   NOT NULL,
    entry     bytea  NOT NULL,
    head      bytea  NOT NULL,
    pid       text,
    case_ref  text
);
CREATE INDEX audit_log_pid ON audit_log (pid) WHERE pid IS NOT NULL;
CREATE INDEX audit_log_case ON audit_log (case_ref) WHERE case_ref IS NOT NULL;

-- Pinned peers and the last accepted keyset of each (rollback protection).
CREATE TABLE peers (
    node         text PRIMARY KEY,
    url          text   NOT NULL,
    fingerprint  text   NOT NULL,
    kind         text,
    serial       bigint,
    keyset       bytea,
    keyset_exp   bigint,
    fetched_at   bigint,
    last_error   text,
    added_at     bigint NOT NULL
);

-- Every keyset ever accepted from a peer: stored receipts and checkpoints
-- point at the keyset that validated them.
CREATE TABLE peer_keysets (
    node     text   NOT NULL,
    serial   bigint NOT NULL,
    wire     bytea  NOT NULL,
    accepted_at bigint NOT NULL,
    PRIMARY KEY (node, serial)
);

-- Sent packets: the sealed wire is stored once and re-sent unchanged.
CREATE TABLE outbox (
    pid        text PRIMARY KEY,
    schema_id  text   NOT NULL,
    case_ref   text,
    wire       bytea,
    pd         bytea  NOT NULL,
    iat        bigint NOT NULL,
    exp        bigint NOT NULL,
    operator   text,
    log_seq    bigint NOT NULL,
    created_at bigint NOT NULL
);

-- One delivery per (packet, recipient).
CREATE TABLE deliveries (
    pid            text   NOT NULL REFERENCES outbox (pid),
    node           text   NOT NULL,
    status         text   NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'delivered', 'rejected', 'expired')),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    last_error     text,
    receipt        bytea,
    receipt_serial bigint,
    reason         text,
    finished_at    bigint,
    PRIMARY KEY (pid, node)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

-- Received packets. The row is also the replay record: content columns are
-- cleared on erasure, (sender, pid, pd, receipt) stay until exp + 5 min.
CREATE TABLE received (
    sender       text   NOT NULL,
    pid          text   NOT NULL,
    pd           bytea  NOT NULL,
    status       text   NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason       text,
    receipt      bytea  NOT NULL,
    schema_id    text,
    case_ref     text,
    iat          bigint NOT NULL,
    exp          bigint NOT NULL,
    received_at  bigint NOT NULL,
    log_seq      bigint NOT NULL,
    sender_seq   bigint NOT NULL,
    sender_head  bytea  NOT NULL,
    keyset_serial bigint NOT NULL,
    wire         bytea,
    body_box     bytea,
    PRIMARY KEY (sender, pid)
);
CREATE INDEX received_inbox ON received (received_at DESC) WHERE status = 'accepted';

-- A case's timeline on this node (what was sent and received).
CREATE TABLE timeline (
    id          bigserial PRIMARY KEY,
    case_ref    text   NOT NULL,
    at          bigint NOT NULL,
    direction   text   NOT NULL CHECK (direction IN ('sent', 'received')),
    pid         text   NOT NULL,
    schema_id   text   NOT NULL,
    counterpart text   NOT NULL,
    event       text   NOT NULL
);
CREATE INDEX timeline_case ON timeline (case_ref, at);

-- Local API operators: only a hash of the bearer token is stored.
CREATE TABLE operators (
    name        text PRIMARY KEY,
    role        text   NOT NULL CHECK (role IN ('admin', 'caseworker', 'auditor')),
    token_hash  bytea  NOT NULL UNIQUE,
    created_at  bigint NOT NULL,
    disabled    boolean NOT NULL DEFAULT false
);

-- Signed checkpoints fetched from peers, with the keyset that validated them.
CREATE TABLE peer_checkpoints (
    node        text   NOT NULL,
    seq         bigint NOT NULL,
    head        bytea  NOT NULL,
    iat         bigint NOT NULL,
    wire        bytea  NOT NULL,
    keyset_serial bigint NOT NULL,
    fetched_at  bigint NOT NULL,
    PRIMARY KEY (node, seq, iat)
);
