-- Jobs, their inputs (stored once per job), the tile tasks they are cut into, and the workers
-- that have served them. Times are milliseconds since the Unix epoch. Never edit this file once
-- applied: add a new migration instead (sqlx checks the checksum at start-up).

CREATE TABLE jobs (
    id          TEXT    PRIMARY KEY,            -- UUID v4
    name        TEXT    NOT NULL DEFAULT '',
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    m           INTEGER NOT NULL CHECK (m > 0),
    k           INTEGER NOT NULL CHECK (k > 0),
    n           INTEGER NOT NULL CHECK (n > 0),
    dtype       TEXT    NOT NULL CHECK (dtype IN ('f32', 'f64')),
    tile        INTEGER NOT NULL CHECK (tile > 0),
    tasks_total INTEGER NOT NULL,
    tasks_done  INTEGER NOT NULL DEFAULT 0,
    error       TEXT,                           -- why the job failed, when it did
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
) STRICT;

CREATE INDEX jobs_newest ON jobs (created_at DESC, id);

-- A is kept row-major (a tile's row panel is one contiguous slice). B is kept cut into column
-- panels, each k×tile row-major and laid end to end, so a tile's column panel is one contiguous
-- slice as well and no task ever re-arranges B.
CREATE TABLE job_inputs (
    job_id   TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    a        BLOB NOT NULL,
    b_panels BLOB NOT NULL
) STRICT;

CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,         -- queue order: older jobs' tiles first
    job_id         TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    tile_row       INTEGER NOT NULL,
    tile_col       INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed', 'cancelled')),
    lease_owner    TEXT,                        -- worker id holding the lease
    lease_deadline INTEGER,                     -- re-queued when passed without a heartbeat
    attempts       INTEGER NOT NULL DEFAULT 0,  -- leases handed out
    failures       INTEGER NOT NULL DEFAULT 0,  -- reported failures and expired leases
    last_error     TEXT,
    result         BLOB,                        -- C tile, row-major little-endian, job dtype
    compute_ms     REAL,
    completed_by   TEXT,
    updated_at     INTEGER NOT NULL,
    UNIQUE (job_id, tile_row, tile_col)
) STRICT;

CREATE INDEX tasks_queue ON tasks (id) WHERE state = 'queued';
CREATE INDEX tasks_leases ON tasks (lease_owner) WHERE state = 'leased';
CREATE INDEX tasks_by_state ON tasks (state);

CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL DEFAULT '',
    threads      INTEGER NOT NULL DEFAULT 1,
    user_agent   TEXT    NOT NULL DEFAULT '',
    tasks_done   INTEGER NOT NULL DEFAULT 0,
    tasks_failed INTEGER NOT NULL DEFAULT 0,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
) STRICT;
