-- Each account counts its changes, so the balance status pricing mirrors never goes backwards.
ALTER TABLE prepayment_accounts ADD COLUMN moves bigint NOT NULL DEFAULT 0;
