-- The CRC-32 of each done tile as it was written to its job's c.npy. A batch of results is
-- committed once its tiles are written, not once they are on disk (see docs/storage.md); after
-- an unclean stop the tiles of unfinished jobs are checked against it, and a tile that did not
-- reach the disk is computed again. NULL for tiles stored by older servers, which synced each
-- batch before committing it.
ALTER TABLE tasks ADD COLUMN result_crc INTEGER;
