-- PostgreSQL twin of migrations/20261212000001_credit_24h.sql (integers are BIGINT).
-- The rolling "24h" boards (#15, docs/credit.md "Aggregates"): the last 24 hours to the hour,
-- not the current UTC day. Credit is kept per hour, and the window's sum per volunteer and team
-- is kept as its own aggregate with a rank index, so a board reads an index and never sums
-- hours per request. A sweep (`db::credit::sweep_credit_window`, every minute) takes the hours
-- that leave the window out of the sums and deletes them.
--
-- The hour (hours since the epoch) a task's credit was granted in, beside `credit_day`, so an
-- audit's withdrawal finds the hourly bucket, and whether the window still counts it.
ALTER TABLE tasks ADD COLUMN credit_hour BIGINT;

-- Per volunteer and team per hour; only the hours still in the window are kept.
CREATE TABLE volunteer_credit_hourly (
    worker_id  TEXT    NOT NULL REFERENCES workers (id),
    hour       BIGINT NOT NULL,
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    PRIMARY KEY (worker_id, hour)
);
-- The sweep finds the volunteers of the hours it takes out through this.
CREATE INDEX volunteer_credit_hourly_hour ON volunteer_credit_hourly (hour, worker_id);

CREATE TABLE team_credit_hourly (
    team_id    TEXT    NOT NULL REFERENCES teams (id),
    hour       BIGINT NOT NULL,
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    PRIMARY KEY (team_id, hour)
);
CREATE INDEX team_credit_hourly_hour ON team_credit_hourly (hour, team_id);

-- The window's sums: always the sum of the hourly rows of the same volunteer (or team). A row
-- left at zero by the sweep is deleted; `listed` as in volunteer_credit.
CREATE TABLE volunteer_credit_24h (
    worker_id  TEXT    PRIMARY KEY REFERENCES workers (id),
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    listed     BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX volunteer_credit_24h_rank ON volunteer_credit_24h (listed, flops DESC, worker_id);

CREATE TABLE team_credit_24h (
    team_id    TEXT    PRIMARY KEY REFERENCES teams (id),
    flops      BIGINT NOT NULL,
    tiles      BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL
);
CREATE INDEX team_credit_24h_rank ON team_credit_24h (flops DESC, team_id);

-- Every hour up to `swept_through` has been taken out of the *_24h sums (and its hourly rows
-- deleted). Grants, withdrawals and sweeps read it in their transactions. Seeded with the hour
-- 24 hours before now, so the first sweep has nothing to do.
CREATE TABLE credit_window (
    id            BIGINT  PRIMARY KEY CHECK (id = 1),
    swept_through BIGINT NOT NULL
);
INSERT INTO credit_window (id, swept_through)
    VALUES (1, CAST(floor(extract(epoch FROM now()) / 3600) AS BIGINT) - 24);

-- Backfill from the credit of the last 24 hours: a done task's `updated_at` is the time of the
-- commit that granted its credit (nothing else writes a done task), so its hour is known.
UPDATE tasks SET credit_hour = updated_at / 3600000
    WHERE state = 'done' AND credit_flops IS NOT NULL
        AND updated_at / 3600000 > (SELECT swept_through FROM credit_window);
INSERT INTO volunteer_credit_hourly (worker_id, hour, flops, tiles, compute_ms)
    SELECT completed_by, credit_hour, SUM(credit_flops), COUNT(*), SUM(credit_ms)
    FROM tasks WHERE credit_hour IS NOT NULL AND state = 'done' AND credit_flops IS NOT NULL
    GROUP BY completed_by, credit_hour;
INSERT INTO team_credit_hourly (team_id, hour, flops, tiles, compute_ms)
    SELECT credit_team, credit_hour, SUM(credit_flops), COUNT(*), SUM(credit_ms)
    FROM tasks WHERE credit_hour IS NOT NULL AND state = 'done' AND credit_flops IS NOT NULL
        AND credit_team IS NOT NULL
    GROUP BY credit_team, credit_hour;
INSERT INTO volunteer_credit_24h (worker_id, flops, tiles, compute_ms, listed)
    SELECT h.worker_id, SUM(h.flops), SUM(h.tiles), SUM(h.compute_ms),
        MIN(CASE WHEN w.quarantine_reason IS NULL THEN 1 ELSE 0 END)
    FROM volunteer_credit_hourly h JOIN workers w ON w.id = h.worker_id
    GROUP BY h.worker_id;
INSERT INTO team_credit_24h (team_id, flops, tiles, compute_ms)
    SELECT team_id, SUM(flops), SUM(tiles), SUM(compute_ms)
    FROM team_credit_hourly GROUP BY team_id;
