-- The insurance a person held until it last changed (stopped, or moved to another region or fund):
-- {"record": <the person record then>, "since": <when that insurance began, or null: before the
-- platform knew>, "until": <when it changed>}, ISO 8601 times; and ``insured_since``, when the
-- insurance held now began (null: before the platform knew: the person's first record, or rows
-- from before this migration). A stay admitted between the two is settled under it
-- (services/eligibility/repository.py, fold_insurance; yidi.domain.eligibility.InsuredBefore).
-- Nothing is rewritten.
ALTER TABLE persons ADD COLUMN insured_before jsonb, ADD COLUMN insured_since timestamptz;
