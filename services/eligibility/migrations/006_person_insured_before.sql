-- The insurance a person held until it last changed (stopped, or moved to another region or fund),
-- and when it changed: {"record": <the person record then>, "until": <ISO 8601 time>}. A stay
-- admitted before the change is settled under it (services/eligibility/repository.py,
-- upsert_persons; yidi.domain.eligibility.InsuredBefore). Null: no change seen since this column
-- came. Nothing is rewritten.
ALTER TABLE persons ADD COLUMN insured_before jsonb;
