-- R21: each filing instance counts, once a minute, the filings still pending past the office's
-- two working days (yidi_filing_office_overdue). Pending filings are few; this index holds only
-- them, with the time each was asked for, so the count reads the index alone.
CREATE INDEX filings_pending ON filings (insuplc_admdvs, (coalesce(made_at, updated_at))) WHERE status = 'pending';
