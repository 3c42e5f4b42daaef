-- Failure reports: who said a task could not be computed (task_failed) or let its lease run
-- out. A task fails its job only on reports from enough trusted workers at distinct
-- addresses (see server/src/trust.rs); each worker counts once per task, so one client, or a
-- crowd of fresh identities, can no longer fail a researcher's job.

CREATE TABLE task_failures (
    task_id   INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    worker_id TEXT    NOT NULL,
    address   TEXT    NOT NULL,                 -- the reporter's address group (IPv6: its /64)
    kind      TEXT    NOT NULL CHECK (kind IN ('reported', 'expired')),
    reason    TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (task_id, worker_id)
) STRICT, WITHOUT ROWID;

-- The address group of the connection holding a lease, so that an expired lease is reported
-- under the address of whoever let it expire, even after that connection is gone.
ALTER TABLE tasks ADD COLUMN lease_address TEXT;
