-- Refusals from unknown or unauthenticated sources are counted here, not in
-- the append-only audit log: one row per hour, source address and reason,
-- so a flood of junk costs a bounded number of rows (docs/security.md).
CREATE TABLE security_events (
    window_start BIGINT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (window_start, source, reason)
);
