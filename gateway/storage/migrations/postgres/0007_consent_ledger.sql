-- Consent you can prove (issue 17): new interaction kinds, the basis of every commercial
-- message, and the recipients left out for want of consent (gateway/consent/ledger.py).

-- New kinds: a parts sale and another transaction (a car wash) are purchases (CASL
-- s. 10(10)(a)); an email open or click is an email interaction for CRM windows.
ALTER TABLE consent_events DROP CONSTRAINT consent_events_kind_check;
ALTER TABLE consent_events ADD CONSTRAINT consent_events_kind_check CHECK (kind IN (
    'inquiry', 'sale-cash', 'sale-finance', 'sale-parts', 'service-repair-order',
    'other-transaction', 'showroom-visit', 'email-reply', 'email-open', 'email-click',
    'express-consent', 'consent-withdrawn'));

-- One row per commercial copy queued, written in the transaction that queues it, never
-- updated. It outlives the queue's sent log: CASL s. 13 puts the proof on the sender.
-- category is what the gateway treated the message as (its primary purpose), label what
-- the CRM's X-Mailgate-Category said.
CREATE TABLE consent_ledger (
    message_id    text        PRIMARY KEY,
    submission_id text        NOT NULL,
    dealer_id     text        NOT NULL,
    recipient     text        NOT NULL,
    at            timestamptz NOT NULL,
    category      text        NOT NULL,
    label         text        NOT NULL DEFAULT '',
    topic         text        NOT NULL,
    rules         text        NOT NULL,
    law           text        NOT NULL,
    preset        text        NOT NULL,
    time_zone     text        NOT NULL,
    basis         text        NOT NULL CHECK (basis IN ('event', 'opt-in', 'no-windows', 'no-rules', 'none')),
    reason        text        NOT NULL,
    eligible      boolean     NOT NULL,
    event_kind    text        NOT NULL DEFAULT '',
    event_on      date,
    last_payment  date,
    ref           text        NOT NULL DEFAULT '',
    source        text        NOT NULL DEFAULT '',
    proof         text        NOT NULL DEFAULT '',
    window_length text        NOT NULL DEFAULT '',
    window_ends   date,
    statement_at  timestamptz
);

CREATE INDEX consent_ledger_recipient ON consent_ledger (dealer_id, recipient, at);
CREATE INDEX consent_ledger_at ON consent_ledger (dealer_id, at);

-- A recipient left out of (or refused with) a message for want of consent.
CREATE TABLE consent_refusals (
    id            bigserial   PRIMARY KEY,
    dealer_id     text        NOT NULL,
    recipient     text        NOT NULL,
    submission_id text        NOT NULL,
    code          text        NOT NULL,
    action        text        NOT NULL,
    detail        text        NOT NULL,
    went_on       boolean     NOT NULL,
    dsn           text        NOT NULL DEFAULT '',
    at            timestamptz NOT NULL
);

CREATE INDEX consent_refusals_dealer_at ON consent_refusals (dealer_id, at);

-- How far the push of consent statements (unsubscribes, complaints, withdrawals) to each
-- dealer's CRM has got (gateway/consent/sync.py): the last suppression id and the last
-- withdrawal's recorded_at pushed. A push that fails leaves them, and is tried again.
CREATE TABLE consent_sync (
    dealer_id         text        PRIMARY KEY,
    suppression_after bigint      NOT NULL DEFAULT 0,
    withdrawals_after timestamptz,
    pushed            bigint      NOT NULL DEFAULT 0,
    last_error        text        NOT NULL DEFAULT '',
    updated_at        timestamptz NOT NULL
);

-- People erased on request (GDPR Art. 17, `mailgate consent erase`): what is left of them
-- is a keyed hash of the address (HMAC under a key of the data directory), so that they
-- stay suppressed while nothing in the store names them.
CREATE TABLE consent_erased (
    dealer_id text        NOT NULL,
    key       text        NOT NULL,
    erased_at timestamptz NOT NULL,
    erased_by text        NOT NULL,
    reason    text        NOT NULL,
    PRIMARY KEY (dealer_id, key)
);
