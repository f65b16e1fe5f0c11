-- The queue (one row per message and recipient, body included) and SMTP AUTH credentials.
--
-- Times are INTEGER microseconds since the Unix epoch, UTC: they sort and compare as
-- numbers, and no text format or local time zone can creep in.
-- STRICT tables (SQLite 3.37+, https://sqlite.org/stricttables.html) refuse values of the
-- wrong type instead of silently storing them.

CREATE TABLE messages (
    id              TEXT    PRIMARY KEY,
    dealer_id       TEXT    NOT NULL,
    mail_from       TEXT    NOT NULL,
    rcpt            TEXT    NOT NULL,
    -- The signed message. Emptied once delivered (the row stays as the sent log);
    -- length(data) = size therefore means "the body is still here".
    data            BLOB    NOT NULL,
    -- SHA-256 of data as enqueued; a mismatch at claim time quarantines the row.
    sha256          BLOB    NOT NULL CHECK (length(sha256) = 32),
    size            INTEGER NOT NULL CHECK (size >= 0),
    received_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL
        CHECK (state IN ('queued', 'held', 'delivered', 'failed', 'quarantined')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- NULL unless the message is waiting for delivery (QUEUED).
    next_attempt_at INTEGER,
    -- The last upstream reply, or why the row was quarantined.
    last_error      TEXT    NOT NULL DEFAULT '',
    findings        TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(findings)),
    note            TEXT    NOT NULL DEFAULT '',
    system          INTEGER NOT NULL DEFAULT 0 CHECK (system IN (0, 1)),
    lease_owner     TEXT,
    lease_until     INTEGER,
    updated_at      INTEGER NOT NULL,
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
) STRICT;

-- claim(): due QUEUED rows in next_attempt_at order.
CREATE INDEX messages_due ON messages (state, next_attempt_at);
-- list_messages() newest first, optionally per dealer.
CREATE INDEX messages_received ON messages (received_at);
CREATE INDEX messages_dealer_received ON messages (dealer_id, received_at);
-- expire_finished(): finished rows by age.
CREATE INDEX messages_state_updated ON messages (state, updated_at);

CREATE TABLE credentials (
    username      TEXT    PRIMARY KEY,
    dealer_id     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX credentials_dealer ON credentials (dealer_id);
