-- Legal duties, second round (issue 16).

-- Art 25: the purpose code a justification began with (`SUPERVISION: ...`),
-- its own field of the entry, searchable with GET /api/v1/audit?purpose=.
ALTER TABLE audit_log ADD COLUMN purpose text;
CREATE INDEX audit_log_purpose ON audit_log (purpose, seq) WHERE purpose IS NOT NULL;

-- Art 8: a consent covers only the nodes in its `recipients` (NULL: every
-- node) and only between its own dates (YYYY-MM-DD, from the record's body).
ALTER TABLE consents
    ADD COLUMN recipients text[],
    ADD COLUMN effective_on text,
    ADD COLUMN expires_on text;

-- Art 20, 29: which operators or teams a case is assigned to.
CREATE TABLE case_assignments (
    case_ref    text   NOT NULL,
    kind        text   NOT NULL CHECK (kind IN ('operator', 'team')),
    assignee    text   NOT NULL,
    assigned_by text   NOT NULL,
    assigned_at bigint NOT NULL,
    PRIMARY KEY (case_ref, kind, assignee)
);
CREATE INDEX case_assignments_assignee ON case_assignments (kind, assignee);

-- The team each operator belongs to (an operator may be in several).
CREATE TABLE operator_teams (
    operator text NOT NULL,
    team     text NOT NULL,
    PRIMARY KEY (operator, team)
);

-- Art 15: an admin's decision to withhold an item, or the existence of its
-- restriction, from subject access exports (legal ground, review date).
CREATE TABLE subject_withholdings (
    case_ref   text   NOT NULL,
    pid        text   NOT NULL,
    what       text   NOT NULL CHECK (what IN ('item', 'restriction')),
    ground     text   NOT NULL,
    review_on  text   NOT NULL,
    decided_by text   NOT NULL,
    decided_at bigint NOT NULL,
    PRIMARY KEY (case_ref, pid, what)
);
