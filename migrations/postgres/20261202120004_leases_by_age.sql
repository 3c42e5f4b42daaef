-- The leases in the order they were handed out, for the search of a slow one worth a copy
-- (`db::slow_leases`): without it the search read every lease, and on PostgreSQL the dead
-- index entries every state change leaves, several milliseconds each time near a job's end.
CREATE INDEX tasks_leased_by_age ON tasks (updated_at, id) WHERE state = 'leased';
