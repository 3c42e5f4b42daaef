-- The instances sharing the database, and when each last said it was alive (#18). An instance
-- silent for longer than INSTANCE_TIMEOUT_MS is gone: any other puts its leases back in the
-- queue, counted against no worker. Only PostgreSQL has several; SQLite keeps the table empty.
CREATE TABLE instances (
    id      TEXT    PRIMARY KEY,
    seen_at INTEGER NOT NULL
) STRICT;
