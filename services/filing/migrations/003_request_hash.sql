-- A reqid used again for another request is refused, not answered with the first one's result.
ALTER TABLE requests ADD COLUMN request_hash text NOT NULL DEFAULT '';
