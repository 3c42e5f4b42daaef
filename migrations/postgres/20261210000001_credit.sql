-- PostgreSQL twin of migrations/20261210000001_credit.sql (integers are BIGINT).
-- Credit for verified work (#15, docs/credit.md). The unit is the floating-point operation:
-- a tile earns its 2·rows·k·cols flops, stored exactly as an integer (GFLOP = flops / 1e9).
--
-- What a task's result was granted, set by the commit that accepts it and read back by the
-- audit that takes it back, so a withdrawal removes exactly what was granted, from the day and
-- the team it was granted to. Meaningful only while the task is 'done'; `credit_flops` is NULL
-- when nothing was granted (the worker was quarantined).
ALTER TABLE tasks ADD COLUMN credit_flops BIGINT;
ALTER TABLE tasks ADD COLUMN credit_ms BIGINT;
ALTER TABLE tasks ADD COLUMN credit_day BIGINT;
ALTER TABLE tasks ADD COLUMN credit_team TEXT;

-- Teams, created by the first volunteer who joins a name. `name_key` (the trimmed name,
-- lowercased) makes "Team" and "team" one team.
CREATE TABLE teams (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Opt-in: a public display name and a team. NULL shows as an anonymous label.
ALTER TABLE workers ADD COLUMN display_name TEXT;
ALTER TABLE workers ADD COLUMN team_id TEXT REFERENCES teams (id);
CREATE INDEX workers_team ON workers (team_id) WHERE team_id IS NOT NULL;

-- Aggregates, grown and shrunk in the transactions that commit and take back results, so that
-- no board ever sums results. `listed` is 0 once the volunteer is quarantined: it vanishes
-- from the boards, and the rank indexes lead with it.
CREATE TABLE volunteer_credit (
    worker_id  TEXT    PRIMARY KEY REFERENCES workers (id),
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    listed     BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX volunteer_credit_rank ON volunteer_credit (listed, flops DESC, worker_id);

-- Per UTC day (`day`: days since 1970-01-01).
CREATE TABLE volunteer_credit_daily (
    worker_id  TEXT    NOT NULL REFERENCES workers (id),
    day        BIGINT NOT NULL,
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    listed     BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (worker_id, day)
);
CREATE INDEX volunteer_credit_daily_rank
    ON volunteer_credit_daily (day, listed, flops DESC, worker_id);

-- A team earns what its members earn while they are members.
CREATE TABLE team_credit (
    team_id    TEXT    PRIMARY KEY REFERENCES teams (id),
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL
);
CREATE INDEX team_credit_rank ON team_credit (flops DESC, team_id);

CREATE TABLE team_credit_daily (
    team_id    TEXT    NOT NULL REFERENCES teams (id),
    day        BIGINT NOT NULL,
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    PRIMARY KEY (team_id, day)
);
CREATE INDEX team_credit_daily_rank ON team_credit_daily (day, flops DESC, team_id);
