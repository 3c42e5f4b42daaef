-- Trust: worker identities that persist across reconnects (a secret token the page keeps),
-- reputation counts, quarantine, and the tasks a worker must never be given again.

ALTER TABLE workers ADD COLUMN token_hash TEXT;             -- SHA-256 of the worker's secret token
ALTER TABLE workers ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;        -- results that failed checks
ALTER TABLE workers ADD COLUMN timed_out INTEGER NOT NULL DEFAULT 0;      -- leases that expired
ALTER TABLE workers ADD COLUMN disconnected INTEGER NOT NULL DEFAULT 0;   -- left while holding leases
ALTER TABLE workers ADD COLUMN consecutive_verified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quarantine_reason TEXT;      -- set: the worker gets no more tasks

CREATE UNIQUE INDEX workers_token ON workers (token_hash) WHERE token_hash IS NOT NULL;

-- Leases are held by a connection (one browser may open several), reputation by a worker.
ALTER TABLE tasks ADD COLUMN lease_worker TEXT;

-- A worker whose result for a task was refused is never given that task again.
CREATE TABLE task_exclusions (
    task_id   INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    worker_id TEXT    NOT NULL,
    PRIMARY KEY (task_id, worker_id)
) STRICT, WITHOUT ROWID;
