-- Feedback events, suppression lists, per-dealer daily counters and the dealer state
-- machine (gateway/feedback/ingest.py, gateway/reputation/).

-- One trusted report about one recipient. The UNIQUE key is the replay key: a report
-- delivered five times is recorded (and counted) once.
CREATE TABLE feedback_events (
    id          INTEGER PRIMARY KEY,
    dealer_id   TEXT    NOT NULL,
    kind        TEXT    NOT NULL
        CHECK (kind IN ('complaint', 'unsubscribe', 'hard-bounce', 'soft-bounce')),
    message_id  TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    detail      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    UNIQUE (message_id, kind, recipient)
) STRICT;

-- Alerts: a dealer's recent complaints; soft-bounce limits: one recipient's recent bounces.
CREATE INDEX feedback_events_dealer ON feedback_events (dealer_id, kind, at);
CREATE INDEX feedback_events_recipient ON feedback_events (dealer_id, recipient, kind, at);

-- Addresses not to be mailed. scope is the dealer id, or '' for the global list. Rows are
-- never deleted: lifting sets lifted_*, so the table is also the audit log.
CREATE TABLE suppressions (
    id          INTEGER PRIMARY KEY,
    scope       TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    lifted_at   INTEGER,
    lifted_by   TEXT    NOT NULL DEFAULT '',
    lift_reason TEXT    NOT NULL DEFAULT ''
) STRICT;

-- At most one open entry per list and address; also the RCPT-time lookup.
CREATE UNIQUE INDEX suppressions_open ON suppressions (address, scope) WHERE lifted_at IS NULL;
CREATE INDEX suppressions_scope ON suppressions (scope, id);

-- Per dealer and UTC day (ISO date): the rates' numerators and denominators.
CREATE TABLE dealer_days (
    dealer_id    TEXT    NOT NULL,
    day          TEXT    NOT NULL,
    sent         INTEGER NOT NULL DEFAULT 0,
    delivered    INTEGER NOT NULL DEFAULT 0,
    complaints   INTEGER NOT NULL DEFAULT 0,
    hard_bounces INTEGER NOT NULL DEFAULT 0,
    soft_bounces INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dealer_id, day)
) STRICT, WITHOUT ROWID;

-- The current state of each dealer something has happened to (absent: active).
CREATE TABLE dealer_status (
    dealer_id   TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL CHECK (state IN ('active', 'warned', 'suspended', 'resumed')),
    reason      TEXT    NOT NULL,
    actor       TEXT    NOT NULL CHECK (actor IN ('auto', 'admin')),
    since       INTEGER NOT NULL,
    expires_at  INTEGER,
    counts_from INTEGER,
    baseline    TEXT    NOT NULL,
    change_id   INTEGER NOT NULL
) STRICT;

-- Every transition, with the evidence (JSON) it was based on.
CREATE TABLE dealer_history (
    id          INTEGER PRIMARY KEY,
    dealer_id   TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    previous    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    by_name     TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    expires_at  INTEGER,
    evidence    TEXT    NOT NULL
) STRICT;

CREATE INDEX dealer_history_dealer ON dealer_history (dealer_id, id);
