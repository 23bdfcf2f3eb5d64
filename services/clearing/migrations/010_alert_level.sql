-- A prepayment account's alert, by level: 0 none, 1 low (below warn_share of what was advanced),
-- 2 run out (a shortfall). A single flag gave one alert for both: an account already warned low
-- raised none when it went on to run out. Accounts warned before are at level 1. `alerted` stays
-- (level > 0) for a clearing instance of the previous version during an upgrade.
ALTER TABLE prepayment_accounts ADD COLUMN alert_level smallint NOT NULL DEFAULT 0;
UPDATE prepayment_accounts SET alert_level = 1 WHERE alerted;
