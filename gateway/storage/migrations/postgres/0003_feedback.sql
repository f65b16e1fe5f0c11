-- Feedback events, suppression lists, per-dealer daily counters and the dealer state
-- machine (gateway/feedback/ingest.py, gateway/reputation/).

-- One trusted report about one recipient. The UNIQUE key is the replay key: a report
-- delivered five times is recorded (and counted) once.
CREATE TABLE feedback_events (
    id          bigserial   PRIMARY KEY,
    dealer_id   text        NOT NULL,
    kind        text        NOT NULL
        CHECK (kind IN ('complaint', 'unsubscribe', 'hard-bounce', 'soft-bounce')),
    message_id  text        NOT NULL,
    recipient   text        NOT NULL,
    at          timestamptz NOT NULL,
    detail      text        NOT NULL,
    subject     text        NOT NULL,
    source      text        NOT NULL,
    UNIQUE (message_id, kind, recipient)
);

-- Alerts: a dealer's recent complaints; soft-bounce limits: one recipient's recent bounces.
CREATE INDEX feedback_events_dealer ON feedback_events (dealer_id, kind, at);
CREATE INDEX feedback_events_recipient ON feedback_events (dealer_id, recipient, kind, at);

-- Addresses not to be mailed. scope is the dealer id, or '' for the global list. Rows are
-- never deleted: lifting sets lifted_*, so the table is also the audit log.
CREATE TABLE suppressions (
    id          bigserial   PRIMARY KEY,
    scope       text        NOT NULL,
    address     text        NOT NULL,
    reason      text        NOT NULL,
    source      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    lifted_at   timestamptz,
    lifted_by   text        NOT NULL DEFAULT '',
    lift_reason text        NOT NULL DEFAULT ''
);

-- At most one open entry per list and address; also the RCPT-time lookup.
CREATE UNIQUE INDEX suppressions_open ON suppressions (address, scope) WHERE lifted_at IS NULL;
CREATE INDEX suppressions_scope ON suppressions (scope, id);

-- Per dealer and UTC day: the rates' numerators and denominators.
CREATE TABLE dealer_days (
    dealer_id    text    NOT NULL,
    day          date    NOT NULL,
    sent         bigint  NOT NULL DEFAULT 0,
    delivered    bigint  NOT NULL DEFAULT 0,
    complaints   bigint  NOT NULL DEFAULT 0,
    hard_bounces bigint  NOT NULL DEFAULT 0,
    soft_bounces bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (dealer_id, day)
);

-- The current state of each dealer something has happened to (absent: active).
CREATE TABLE dealer_status (
    dealer_id   text        PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('active', 'warned', 'suspended', 'resumed')),
    reason      text        NOT NULL,
    actor       text        NOT NULL CHECK (actor IN ('auto', 'admin')),
    since       timestamptz NOT NULL,
    expires_at  timestamptz,
    counts_from timestamptz,
    baseline    text        NOT NULL,
    change_id   bigint      NOT NULL
);

-- Every transition, with the evidence (JSON text) it was based on.
CREATE TABLE dealer_history (
    id          bigserial   PRIMARY KEY,
    dealer_id   text        NOT NULL,
    state       text        NOT NULL,
    previous    text        NOT NULL,
    reason      text        NOT NULL,
    actor       text        NOT NULL,
    by_name     text        NOT NULL,
    at          timestamptz NOT NULL,
    expires_at  timestamptz,
    evidence    text        NOT NULL
);

CREATE INDEX dealer_history_dealer ON dealer_history (dealer_id, id);
