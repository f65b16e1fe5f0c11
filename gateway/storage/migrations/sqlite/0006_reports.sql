-- Deliverability reports (gateway/reports/): who took on each dealer's report for each
-- period, contacts who asked for no more reports, and the subject of a duplicate drop
-- (the report names the template repeated most). 0005 is taken by another change.

ALTER TABLE dup_drops ADD COLUMN subject TEXT NOT NULL DEFAULT '';

-- One row per dealer and period ('day:2026-01-05', 'week:2026-W02'). The primary key makes
-- the claim atomic across nodes; a claim left open past its lease (the node died while
-- building the report) may be taken over. outcome: '' while open, then 'sent',
-- 'skipped' (no traffic) or 'no-recipients'.
CREATE TABLE report_periods (
    dealer_id   TEXT    NOT NULL,
    period      TEXT    NOT NULL,
    node        TEXT    NOT NULL,
    claimed_at  INTEGER NOT NULL,
    outcome     TEXT    NOT NULL DEFAULT '',
    done_at     INTEGER,
    PRIMARY KEY (dealer_id, period)
) STRICT, WITHOUT ROWID;

-- Contacts who followed the unsubscribe link of a report (addresses lower-cased).
CREATE TABLE report_optouts (
    dealer_id   TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (dealer_id, address)
) STRICT, WITHOUT ROWID;
