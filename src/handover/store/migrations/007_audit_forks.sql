-- Declared forks of the node's own audit log (docs/protocol.md section 5.1).
-- A restore from backup loses the entries written after the backup: the
-- restored chain is kept here, whole and still verifiable, as chain N
-- (1, 2, ... in the order of restores), and `audit_log` starts a new chain
-- whose first entry is an `alteration` naming the last head kept.
CREATE TABLE audit_archive (
    chain     integer NOT NULL CHECK (chain >= 1),
    seq       bigint  NOT NULL CHECK (seq >= 1),
    at        bigint  NOT NULL,
    op        text    NOT NULL,
    entry     bytea   NOT NULL,
    head      bytea   NOT NULL,
    pid       text,
    case_ref  text,
    PRIMARY KEY (chain, seq)
);

-- One signed fork declaration per archived chain, served to peers at
-- GET /federation/v1/log/forks. `prev_seq`/`prev_head` end chain `chain`.
CREATE TABLE audit_forks (
    chain        integer PRIMARY KEY CHECK (chain >= 1),
    prev_seq     bigint  NOT NULL CHECK (prev_seq >= 0),
    prev_head    bytea   NOT NULL,
    backup_at    bigint  NOT NULL,
    declared_at  bigint  NOT NULL,
    reason       text    NOT NULL,
    wire         bytea   NOT NULL
);
