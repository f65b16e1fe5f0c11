-- Consent: the relationship records a dealer's CRM or DMS feeds in (gateway/consent/rules.py).
-- Rows are never deleted or overwritten with older facts: an ineligible recipient is
-- locked by the rules, not removed, and a new interaction makes it eligible again.

-- One dated interaction. The primary key is the natural key of an event, so importing a
-- file twice changes nothing; a finance or lease sale imported again with a later last
-- payment date keeps the later one. Dates are ISO (YYYY-MM-DD) text, which sorts as dates.
-- Clustered by dealer and address: the RCPT lookup and the per-dealer scan are ranges.
CREATE TABLE consent_events (
    dealer_id    TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('inquiry', 'sale-cash', 'sale-finance', 'service-repair-order',
                          'showroom-visit', 'email-reply', 'express-consent',
                          'consent-withdrawn')),
    occurred_on  TEXT    NOT NULL,
    ref          TEXT    NOT NULL DEFAULT '',
    last_payment TEXT,
    source       TEXT    NOT NULL DEFAULT '',
    proof        TEXT    NOT NULL DEFAULT '',
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (dealer_id, address, kind, occurred_on, ref)
) STRICT, WITHOUT ROWID;

-- Opt-ins and opt-outs per channel and topic, every statement kept (the latest decides).
CREATE TABLE consent_preferences (
    dealer_id    TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    topic        TEXT    NOT NULL CHECK (topic IN ('dealer-marketing', 'service-follow-up', 'third-party')),
    at           INTEGER NOT NULL,
    granted      INTEGER NOT NULL CHECK (granted IN (0, 1)),
    source       TEXT    NOT NULL DEFAULT '',
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (dealer_id, address, channel, topic, at)
) STRICT, WITHOUT ROWID;
