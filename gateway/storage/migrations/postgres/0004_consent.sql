-- Consent: the relationship records a dealer's CRM or DMS feeds in (gateway/consent/rules.py).
-- Rows are never deleted or overwritten with older facts: an ineligible recipient is
-- locked by the rules, not removed, and a new interaction makes it eligible again.

-- One dated interaction. The primary key is the natural key of an event, so importing a
-- file twice changes nothing; a finance or lease sale imported again with a later last
-- payment date keeps the later one. The key's index serves the RCPT lookup (dealer,
-- address) and the per-dealer scan in address order.
CREATE TABLE consent_events (
    dealer_id    text        NOT NULL,
    address      text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('inquiry', 'sale-cash', 'sale-finance', 'service-repair-order',
                          'showroom-visit', 'email-reply', 'express-consent',
                          'consent-withdrawn')),
    occurred_on  date        NOT NULL,
    ref          text        NOT NULL DEFAULT '',
    last_payment date,
    source       text        NOT NULL DEFAULT '',
    proof        text        NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (dealer_id, address, kind, occurred_on, ref)
);

-- Opt-ins and opt-outs per channel and topic, every statement kept (the latest decides).
CREATE TABLE consent_preferences (
    dealer_id    text        NOT NULL,
    address      text        NOT NULL,
    channel      text        NOT NULL,
    topic        text        NOT NULL CHECK (topic IN ('dealer-marketing', 'service-follow-up', 'third-party')),
    at           timestamptz NOT NULL,
    granted      boolean     NOT NULL,
    source       text        NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (dealer_id, address, channel, topic, at)
);
