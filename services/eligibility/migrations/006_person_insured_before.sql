-- The insurance a person held until it last changed (stopped, or moved to another region or fund):
-- {"record": <the person record then>, "since": <when that insurance began, or null: before the
-- platform knew>, "until": <when it changed>}, ISO 8601 times; and ``insured_since``, when the
-- insurance held now began (null: before the platform knew: the person's first record, or rows
-- from before this migration). A stay admitted between the two is settled under it
-- (services/eligibility/repository.py, fold_insurance; yidi.domain.eligibility.InsuredBefore).
-- ``seen_partition``/``seen_offset``: the refdata.persons record last applied, so that a batch
-- applied again (a feed's batch read again after its commit failed) is not folded twice: a record
-- without updated_at, applied again over what came after it, moved ``insured_since``.
-- Nothing is rewritten.
ALTER TABLE persons ADD COLUMN insured_before jsonb, ADD COLUMN insured_since timestamptz,
    ADD COLUMN seen_partition integer, ADD COLUMN seen_offset bigint;
