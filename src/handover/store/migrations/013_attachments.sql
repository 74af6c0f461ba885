-- Attachments (docs/protocol.md section 8): encrypted streams kept in PostgreSQL.
--
-- One row per stream in attachment_streams, its bytes in attachment_chunks (pieces
-- of at most 1 MiB, each one committed with the offset it advances, so a
-- stream interrupted anywhere resumes from what is durably held; every replica
-- of a node sees the same offsets).
--
-- origin: '' for streams this node made (uploaded by a local user, to be sent),
--         the peer's node id for streams a peer uploaded to us.
-- pid:    the packet that claimed the stream (NULL while unclaimed).
-- item_box: the att item (name, type, size, key) sealed at rest by the vault,
--         set when a packet claims a received stream; for our own streams, at upload.
CREATE TABLE attachment_streams (
    origin      text    NOT NULL,
    aid         text    NOT NULL,
    alen        bigint  NOT NULL CHECK (alen >= 41),
    ah          bytea   NOT NULL,
    exp         bigint  NOT NULL,
    received    bigint  NOT NULL DEFAULT 0,
    complete    boolean NOT NULL DEFAULT false,
    pid         text,
    item_box    bytea,
    -- With a scan command set: pending, clean, quarantined (received streams only).
    scan        text    CHECK (scan IN ('pending', 'clean', 'quarantined')),
    created_at  bigint  NOT NULL,
    PRIMARY KEY (origin, aid),
    CHECK (received <= alen)
);
CREATE INDEX attachment_streams_unclaimed ON attachment_streams (exp) WHERE pid IS NULL;
CREATE INDEX attachment_streams_pid ON attachment_streams (pid) WHERE pid IS NOT NULL;
CREATE INDEX attachment_streams_scan ON attachment_streams (created_at) WHERE scan = 'pending';

CREATE TABLE attachment_chunks (
    origin  text   NOT NULL,
    aid     text   NOT NULL,
    start   bigint NOT NULL,
    data    bytea  NOT NULL,
    PRIMARY KEY (origin, aid, start),
    FOREIGN KEY (origin, aid) REFERENCES attachment_streams (origin, aid) ON DELETE CASCADE
);
-- Chunks are written once and read in order; compressing encrypted bytes is wasted work.
ALTER TABLE attachment_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Which sent packets carry one of our own streams: a submission whose recipients
-- get different policy views makes several packets, all with the same streams.
CREATE TABLE attachment_sent (
    aid  text NOT NULL,
    pid  text NOT NULL,
    PRIMARY KEY (pid, aid)
);
CREATE INDEX attachment_sent_aid ON attachment_sent (aid);

-- Who read an attachment (subject access lists it): one row per download.
CREATE TABLE attachment_reads (
    origin   text   NOT NULL,
    aid      text   NOT NULL,
    pid      text   NOT NULL,
    operator text   NOT NULL,
    at       bigint NOT NULL
);
CREATE INDEX attachment_reads_pid ON attachment_reads (pid);
