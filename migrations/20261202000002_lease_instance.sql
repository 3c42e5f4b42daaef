-- The instance whose connection holds a lease. Several instances share one PostgreSQL
-- database (#18): an instance that stops, or starts, puts back only its own leases, never
-- those of the instances still serving their workers.
ALTER TABLE tasks ADD COLUMN lease_instance TEXT;
