-- A visit (a facility's mdtrt_id for a person) is settled once: settling it again under a new msgid
-- would pay the funds twice and skip a per-stay deductible. A second settlement needs the first
-- cancelled. Pricing checks it under the person's lock (handlers.py); this index finds the visit.
-- The facility is kept too, so that only the facility that settled may cancel.
ALTER TABLE settlements ADD COLUMN fixmedins_code text, ADD COLUMN mdtrt_id text;
CREATE INDEX settlements_visit ON settlements (psn_no, fixmedins_code, mdtrt_id) WHERE state = 'settled';
