-- Duplicate suppression and frequency caps (see gateway/duplicates/fingerprints.py).
--
-- No address is stored here: a recipient is a 16-byte BLAKE2b key of dealer and
-- normalised address; content is a 16-byte fingerprint and a 128-byte MinHash signature.

-- The version guard of one recipient: every commercial send bumps it, and a claim made
-- with a stale version is refused, so two connections or nodes deciding about the same
-- recipient at once cannot both pass a cap or a near-duplicate check.
CREATE TABLE dup_recipients (
    rkey        BLOB    PRIMARY KEY CHECK (length(rkey) = 16),
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX dup_recipients_updated ON dup_recipients (updated_at);

-- One row per recipient and content. The primary key is the exact-duplicate claim
-- (INSERT ... ON CONFLICT); the table is clustered on it (WITHOUT ROWID), so a
-- recipient's history is one range scan on its key prefix.
CREATE TABLE dup_sends (
    rkey        BLOB    NOT NULL CHECK (length(rkey) = 16),
    fingerprint BLOB    NOT NULL CHECK (length(fingerprint) = 16),
    message_id  TEXT    NOT NULL,
    sent_at     INTEGER NOT NULL,
    signature   BLOB    NOT NULL,
    category    TEXT    NOT NULL CHECK (category IN ('commercial', 'transactional')),
    PRIMARY KEY (rkey, fingerprint)
) STRICT, WITHOUT ROWID;

-- Expiry deletes the oldest rows in small batches.
CREATE INDEX dup_sends_sent ON dup_sends (sent_at);

-- What was left out or refused as a duplicate, and why (`mailgate duplicates list`).
CREATE TABLE dup_drops (
    id            INTEGER PRIMARY KEY,
    dealer_id     TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    submission_id TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('exact', 'near', 'cap')),
    code          TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    earlier       TEXT    NOT NULL,
    detail        TEXT    NOT NULL,
    at            INTEGER NOT NULL
) STRICT;

CREATE INDEX dup_drops_dealer_at ON dup_drops (dealer_id, at);
CREATE INDEX dup_drops_at ON dup_drops (at);
