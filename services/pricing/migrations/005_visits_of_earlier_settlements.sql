-- The visit of each settlement made before migration 004, from what pricing passed on for it (the
-- facts of its PricedWork), so that a retry of such a visit under a new msgid is refused too.
-- Settlements written by pricing instances of the code before 004 (a rolling upgrade) would still
-- lack it: stop every pricing instance before starting this version (runbook, "Upgrading").
UPDATE settlements s
SET fixmedins_code = r.emitted -> 0 -> 'facts' ->> 'fixmedins_code',
    mdtrt_id = r.emitted -> 0 -> 'facts' ->> 'mdtrt_id'
FROM requests r
WHERE r.msgid = s.msgid AND s.fixmedins_code IS NULL AND s.mdtrt_id IS NULL;
