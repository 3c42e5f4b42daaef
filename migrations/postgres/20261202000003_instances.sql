-- The instances sharing the database, and when each last said it was alive. An instance
-- silent for longer than INSTANCE_TIMEOUT_MS is gone: any other puts its leases back in the
-- queue, counted against no worker.
CREATE TABLE instances (
    id      TEXT   PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
