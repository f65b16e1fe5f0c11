-- The queue (one row per message and recipient, body included) and SMTP AUTH credentials.

CREATE TABLE messages (
    id              text        PRIMARY KEY,
    dealer_id       text        NOT NULL,
    mail_from       text        NOT NULL,
    rcpt            text        NOT NULL,
    -- The signed message. Emptied once delivered (the row stays as the sent log);
    -- octet_length(data) = size therefore means "the body is still here".
    data            bytea       NOT NULL,
    -- SHA-256 of data as enqueued; a mismatch at claim time quarantines the row.
    sha256          bytea       NOT NULL CHECK (octet_length(sha256) = 32),
    size            bigint      NOT NULL CHECK (size >= 0),
    received_at     timestamptz NOT NULL,
    state           text        NOT NULL
        CHECK (state IN ('queued', 'held', 'delivered', 'failed', 'quarantined')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- NULL unless the message is waiting for delivery (QUEUED).
    next_attempt_at timestamptz,
    -- The last upstream reply, or why the row was quarantined.
    last_error      text        NOT NULL DEFAULT '',
    findings        text[]      NOT NULL DEFAULT '{}',
    note            text        NOT NULL DEFAULT '',
    system          boolean     NOT NULL DEFAULT false,
    -- The node holding the message and until when; another node may take it over after.
    lease_owner     text,
    lease_until     timestamptz,
    updated_at      timestamptz NOT NULL,
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- claim(): due QUEUED rows in next_attempt_at order.
CREATE INDEX messages_due ON messages (state, next_attempt_at);
-- list_messages() newest first, optionally per dealer.
CREATE INDEX messages_received ON messages (received_at);
CREATE INDEX messages_dealer_received ON messages (dealer_id, received_at);
-- expire_finished(): finished rows by age.
CREATE INDEX messages_state_updated ON messages (state, updated_at);

CREATE TABLE credentials (
    username      text        PRIMARY KEY,
    dealer_id     text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE INDEX credentials_dealer ON credentials (dealer_id);
