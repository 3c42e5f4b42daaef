-- Slices of k a job is cut into (issue #14): a task computes its tile's partial product over
-- one slice, and the server sums a tile's partials. Jobs from before were never split.
ALTER TABLE jobs ADD COLUMN k_split INTEGER NOT NULL DEFAULT 1 CHECK (k_split > 0);
