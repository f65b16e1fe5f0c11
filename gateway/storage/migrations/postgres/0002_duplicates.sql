-- Duplicate suppression and frequency caps (see gateway/duplicates/fingerprints.py).
--
-- No address is stored here: a recipient is a 16-byte BLAKE2b key of dealer and
-- normalised address; content is a 16-byte fingerprint and a 128-byte MinHash signature.

-- The version guard of one recipient: every commercial send bumps it, and a claim made
-- with a stale version is refused (UPDATE ... WHERE version = $expected), so two
-- connections or nodes deciding about the same recipient at once cannot both pass a cap
-- or a near-duplicate check.
CREATE TABLE dup_recipients (
    rkey        bytea       PRIMARY KEY CHECK (octet_length(rkey) = 16),
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX dup_recipients_updated ON dup_recipients (updated_at);

-- One row per recipient and content. The primary key is the exact-duplicate claim
-- (INSERT ... ON CONFLICT) and also serves a recipient's history (key prefix).
CREATE TABLE dup_sends (
    rkey        bytea       NOT NULL CHECK (octet_length(rkey) = 16),
    fingerprint bytea       NOT NULL CHECK (octet_length(fingerprint) = 16),
    message_id  text        NOT NULL,
    sent_at     timestamptz NOT NULL,
    signature   bytea       NOT NULL,
    category    text        NOT NULL CHECK (category IN ('commercial', 'transactional')),
    PRIMARY KEY (rkey, fingerprint)
);

-- Expiry deletes the oldest rows in small batches.
CREATE INDEX dup_sends_sent ON dup_sends (sent_at);

-- What was left out or refused as a duplicate, and why (`mailgate duplicates list`).
CREATE TABLE dup_drops (
    id            bigserial   PRIMARY KEY,
    dealer_id     text        NOT NULL,
    recipient     text        NOT NULL,
    submission_id text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('exact', 'near', 'cap')),
    code          text        NOT NULL,
    action        text        NOT NULL,
    earlier       text        NOT NULL,
    detail        text        NOT NULL,
    at            timestamptz NOT NULL
);

CREATE INDEX dup_drops_dealer_at ON dup_drops (dealer_id, at);
CREATE INDEX dup_drops_at ON dup_drops (at);
