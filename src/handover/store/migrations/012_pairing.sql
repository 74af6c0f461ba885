-- Pairing invitations (docs/protocol.md section 8): a one-time code
-- `<invitation>-<word>-<word>` made by `handover peers invite`. The code is
-- kept only sealed with the node's storage key (SPAKE2 needs it as its
-- password), as is the session key. An invitation ends after one
-- success, three started attempts that did not succeed, or its hour.
CREATE TABLE pair_invitations (
    invitation   integer PRIMARY KEY CHECK (invitation BETWEEN 1 AND 999),
    code_sealed  bytea   NOT NULL,
    kind         text    NOT NULL,
    created_at   bigint  NOT NULL,
    expires_at   bigint  NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    status       text    NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'paired', 'ended', 'expired')),
    -- the session in progress: SPAKE2 messages and key (sealed), the accepter's offer
    msg_inviter  bytea,
    msg_accepter bytea,
    key_sealed   bytea,
    offer        bytea,
    session_at   bigint,
    partner      text,
    ended_at     bigint
);

-- The node's own signed profile, every version (the newest is served).
CREATE TABLE own_profiles (
    serial  bigint PRIMARY KEY CHECK (serial >= 1),
    wire    bytea  NOT NULL,
    set_at  bigint NOT NULL
);

-- Each pinned peer's profile as last verified with its pinned root.
CREATE TABLE peer_profiles (
    node        text   PRIMARY KEY,
    serial      bigint NOT NULL,
    wire        bytea  NOT NULL,
    fetched_at  bigint NOT NULL,
    changed_at  bigint NOT NULL,
    previous_serial bigint,  -- the serial before the last change (NULL: never changed)
    last_error  text
);
