-- Retention: when a finished job's inputs and results were removed, and when its result was
-- first downloaded.

ALTER TABLE jobs ADD COLUMN downloaded_at INTEGER;
ALTER TABLE jobs ADD COLUMN purged_at INTEGER;
