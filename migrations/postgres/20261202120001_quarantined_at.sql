-- When a worker was quarantined: instances sharing PostgreSQL each hold their own connections,
-- and learn of a quarantine decided on another instance by asking for the recent ones.
ALTER TABLE workers ADD COLUMN quarantined_at BIGINT;
CREATE INDEX workers_quarantined_at ON workers (quarantined_at) WHERE quarantined_at IS NOT NULL;
