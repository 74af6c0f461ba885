-- Retention reviews (LED Art 5) and rectification (LED Art 7(3), Art 16).

-- The date an EXTEND decision set: a review date recomputed from the rule
-- (when the case's supervision end or release date changes) never moves
-- the review before it.
ALTER TABLE outbox ADD COLUMN review_extended bigint;
ALTER TABLE received ADD COLUMN review_extended bigint;

-- Rectifications this node made of packets it sent: one row per operator action ...
CREATE TABLE rectifications (
    id          bigserial PRIMARY KEY,
    target_pid  text   NOT NULL REFERENCES outbox (pid),
    action      text   NOT NULL CHECK (action IN ('RECTIFY', 'ERASE', 'RESTRICT')),
    reason      text   NOT NULL,
    operator    text   NOT NULL,
    created_at  bigint NOT NULL
);
CREATE INDEX rectifications_target ON rectifications (target_pid, id);

-- ... and one row per recipient of the target (from the disclosure record): the
-- notice sent to it, NULL until queued. The notice's delivery, with its signed
-- receipt, is the recipient's acknowledgement.
CREATE TABLE rectification_recipients (
    rectification_id bigint NOT NULL REFERENCES rectifications (id),
    node        text   NOT NULL,
    notice_pid  text,
    PRIMARY KEY (rectification_id, node)
);

-- Rectification notices this node received and applied to its copy of a packet.
CREATE TABLE rectifications_applied (
    sender      text   NOT NULL,
    notice_pid  text   NOT NULL,
    target_pid  text   NOT NULL,
    action      text   NOT NULL CHECK (action IN ('RECTIFY', 'ERASE', 'RESTRICT')),
    reason      text   NOT NULL,
    applied_at  bigint NOT NULL,
    PRIMARY KEY (sender, notice_pid)
);
CREATE INDEX rectifications_applied_target ON rectifications_applied (sender, target_pid);
