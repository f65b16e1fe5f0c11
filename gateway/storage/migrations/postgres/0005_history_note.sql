-- The operator's internal note on a transition, kept apart from the reason the dealer is
-- shown (the 554 reply, the status page, the alert e-mail).
ALTER TABLE dealer_history ADD COLUMN note text NOT NULL DEFAULT '';
