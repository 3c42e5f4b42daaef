-- A download of a job's result in progress holds its bytes until `read_until` (ms), renewed as
-- it reads. Retention marks a job purged when its time is up, so no new download starts, but
-- leaves the bytes of a job with a download in progress until the lease lapses; after that
-- `read_until` goes back to NULL. So, on a purged job, `read_until IS NOT NULL` means "its
-- bytes are still kept" (docs/storage.md, "The end of a job").
ALTER TABLE jobs ADD COLUMN read_until BIGINT;
