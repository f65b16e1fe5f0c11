-- Consent you can prove (issue 17): new interaction kinds, the basis of every commercial
-- message, and the recipients left out for want of consent (gateway/consent/ledger.py).

-- New kinds: a parts sale and another transaction (a car wash) are purchases (CASL
-- s. 10(10)(a)); an email open or click is an email interaction for CRM windows. SQLite
-- cannot change a CHECK constraint in place: the table is rebuilt, rows and key kept.
CREATE TABLE consent_events_v6 (
    dealer_id    TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('inquiry', 'sale-cash', 'sale-finance', 'sale-parts',
                          'service-repair-order', 'other-transaction', 'showroom-visit',
                          'email-reply', 'email-open', 'email-click', 'express-consent',
                          'consent-withdrawn')),
    occurred_on  TEXT    NOT NULL,
    ref          TEXT    NOT NULL DEFAULT '',
    last_payment TEXT,
    source       TEXT    NOT NULL DEFAULT '',
    proof        TEXT    NOT NULL DEFAULT '',
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (dealer_id, address, kind, occurred_on, ref)
) STRICT, WITHOUT ROWID;

INSERT INTO consent_events_v6 SELECT dealer_id, address, kind, occurred_on, ref, last_payment,
    source, proof, recorded_at FROM consent_events;
DROP TABLE consent_events;
ALTER TABLE consent_events_v6 RENAME TO consent_events;

-- One row per commercial copy queued, written in the transaction that queues it, never
-- updated. It outlives the queue's sent log: CASL s. 13 puts the proof on the sender.
-- category is what the gateway treated the message as (its primary purpose), label what
-- the CRM's X-Mailgate-Category said.
-- Times are microseconds since the epoch; dates ISO text.
CREATE TABLE consent_ledger (
    message_id    TEXT    PRIMARY KEY,
    submission_id TEXT    NOT NULL,
    dealer_id     TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    category      TEXT    NOT NULL,
    label         TEXT    NOT NULL DEFAULT '',
    topic         TEXT    NOT NULL,
    rules         TEXT    NOT NULL,
    law           TEXT    NOT NULL,
    preset        TEXT    NOT NULL,
    time_zone     TEXT    NOT NULL,
    basis         TEXT    NOT NULL CHECK (basis IN ('event', 'opt-in', 'no-windows', 'no-rules', 'none')),
    reason        TEXT    NOT NULL,
    eligible      INTEGER NOT NULL CHECK (eligible IN (0, 1)),
    event_kind    TEXT    NOT NULL DEFAULT '',
    event_on      TEXT,
    last_payment  TEXT,
    ref           TEXT    NOT NULL DEFAULT '',
    source        TEXT    NOT NULL DEFAULT '',
    proof         TEXT    NOT NULL DEFAULT '',
    window_length TEXT    NOT NULL DEFAULT '',
    window_ends   TEXT,
    statement_at  INTEGER
) STRICT;

-- `mailgate consent evidence ADDRESS` (one customer) and the export of a period.
CREATE INDEX consent_ledger_recipient ON consent_ledger (dealer_id, recipient, at);
CREATE INDEX consent_ledger_at ON consent_ledger (dealer_id, at);

-- A recipient left out of (or refused with) a message for want of consent: what the CRM
-- that got 250 can ask about (`mailgate consent refused`, the admin API).
CREATE TABLE consent_refusals (
    id            INTEGER PRIMARY KEY,
    dealer_id     TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    submission_id TEXT    NOT NULL,
    code          TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    detail        TEXT    NOT NULL,
    went_on       INTEGER NOT NULL CHECK (went_on IN (0, 1)),
    dsn           TEXT    NOT NULL DEFAULT '',
    at            INTEGER NOT NULL
) STRICT;

CREATE INDEX consent_refusals_dealer_at ON consent_refusals (dealer_id, at);

-- How far the push of consent statements (unsubscribes, complaints, withdrawals) to each
-- dealer's CRM has got (gateway/consent/sync.py): the last suppression id and the last
-- withdrawal's recorded_at pushed. A push that fails leaves them, and is tried again.
CREATE TABLE consent_sync (
    dealer_id         TEXT    PRIMARY KEY,
    suppression_after INTEGER NOT NULL DEFAULT 0,
    withdrawals_after INTEGER NOT NULL DEFAULT 0,
    pushed            INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT    NOT NULL DEFAULT '',
    updated_at        INTEGER NOT NULL
) STRICT;

-- People erased on request (GDPR Art. 17, `mailgate consent erase`): what is left of them
-- is a keyed hash of the address (HMAC under a key of the data directory), so that they
-- stay suppressed while nothing in the store names them.
CREATE TABLE consent_erased (
    dealer_id TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    erased_at INTEGER NOT NULL,
    erased_by TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    PRIMARY KEY (dealer_id, key)
) STRICT, WITHOUT ROWID;
