-- The web interface (src/handover/web/ui/): operators' sign-in credentials and
-- server-side sessions. Only an Argon2id hash of a password and only a
-- SHA-256 hash of a session id are stored.
CREATE TABLE operator_credentials (
    name           text PRIMARY KEY REFERENCES operators (name) ON DELETE CASCADE,
    password_hash  text   NOT NULL,
    totp_secret    bytea,
    updated_at     bigint NOT NULL
);

CREATE TABLE ui_sessions (
    id_hash     bytea  PRIMARY KEY,
    operator    text   NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf_token  text   NOT NULL,
    created_at  bigint NOT NULL,
    last_seen   bigint NOT NULL
);
CREATE INDEX ui_sessions_operator ON ui_sessions (operator);
CREATE INDEX ui_sessions_last_seen ON ui_sessions (last_seen);
