-- Erasure that reaches every copy and cannot be undone (LED Art 5, 16, 18, 29).

-- A delivery stopped because its packet was erased or restricted before it
-- went out: the delivery worker claims only `pending` rows.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'delivered', 'rejected', 'expired', 'cancelled'));

-- Crypto-shredding: each stored packet's body (and a received packet's wire)
-- is sealed with its own random data key; `data_key` is that key wrapped by
-- the node's storage key. ERASE sets it to NULL in the same transaction that
-- clears the content. Rows written before this migration have no data key
-- (their boxes are sealed with the storage key itself) until the node wraps
-- them at startup or `handover keys rotate-storage` re-seals them.
ALTER TABLE outbox ADD COLUMN data_key bytea;
ALTER TABLE received ADD COLUMN data_key bytea;

-- The node that imposed a received copy's restriction (the originator, by its
-- rectification notice): only its notice may lift it.
ALTER TABLE received ADD COLUMN restricted_by text;

-- A rectification notice is kept (sealed with its own data key) until it is
-- queued, so a notice that could not be queued after the local change is
-- queued again by the maintenance sweep, and one whose delivery expired is
-- sent again, until the recipient acknowledges.
ALTER TABLE rectification_recipients ADD COLUMN notice_box bytea;
ALTER TABLE rectification_recipients ADD COLUMN notice_key bytea;
ALTER TABLE rectification_recipients ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE rectification_recipients ADD COLUMN last_error text;

-- Review decisions taken before the review falls due: an admin proposes, a
-- different admin approves (four eyes).
CREATE TABLE review_proposals (
    id            bigserial PRIMARY KEY,
    direction     text   NOT NULL CHECK (direction IN ('sent', 'received')),
    pid           text   NOT NULL,
    sender        text,
    outcome       text   NOT NULL CHECK (outcome IN ('EXTEND', 'ERASE')),
    review_at     bigint,
    reason_code   text   NOT NULL,
    justification text   NOT NULL,
    proposer      text   NOT NULL,
    created_at    bigint NOT NULL,
    state         text   NOT NULL DEFAULT 'pending_approval'
                  CHECK (state IN ('pending_approval', 'approved', 'withdrawn')),
    approver      text,
    decided_at    bigint
);
CREATE UNIQUE INDEX review_proposals_open ON review_proposals (direction, pid, coalesce(sender, ''))
    WHERE state = 'pending_approval';

-- Rectification requests (inaccuracy reports) this node received from a
-- recipient of a packet it sent; answered by a rectification of that packet.
CREATE TABLE rectification_requests (
    sender      text   NOT NULL,
    pid         text   NOT NULL,
    target_pid  text   NOT NULL,
    concern     text   NOT NULL,
    fields      text[] NOT NULL DEFAULT '{}',
    received_at bigint NOT NULL,
    answered_by bigint REFERENCES rectifications (id),
    PRIMARY KEY (sender, pid)
);
CREATE INDEX rectification_requests_target ON rectification_requests (target_pid);

-- LIFT: the originator lifts a restriction it imposed, by its notice.
ALTER TABLE rectifications DROP CONSTRAINT IF EXISTS rectifications_action_check;
ALTER TABLE rectifications ADD CONSTRAINT rectifications_action_check
    CHECK (action IN ('RECTIFY', 'ERASE', 'RESTRICT', 'LIFT'));
ALTER TABLE rectifications_applied DROP CONSTRAINT IF EXISTS rectifications_applied_action_check;
ALTER TABLE rectifications_applied ADD CONSTRAINT rectifications_applied_action_check
    CHECK (action IN ('RECTIFY', 'ERASE', 'RESTRICT', 'LIFT'));
