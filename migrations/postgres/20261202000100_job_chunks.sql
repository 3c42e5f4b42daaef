-- Jobs' matrices in the database, so that instances need no shared DATA_DIR (#18; see
-- docs/storage.md). Inputs: each `.npy` file of A and B, header included, cut into chunks of
-- 1 MiB (`seq` counts them from the file's start), inserted in the transaction that inserts
-- the job; every instance copies them into its own DATA_DIR the first time it needs a panel.
-- Deleted when the job ends.
CREATE TABLE job_chunks (
    job_id TEXT   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    part   TEXT   NOT NULL CHECK (part IN ('a', 'b')),
    seq    BIGINT NOT NULL CHECK (seq >= 0),
    bytes  BYTEA  NOT NULL,
    PRIMARY KEY (job_id, part, seq)
);

-- Floating-point data hardly compresses: stored out of line without trying (EXTERNAL), which
-- also lets substring() read a slice of a value without reading all of it.
ALTER TABLE job_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- Results: each done tile's bytes (row-major, little-endian, the job's dtype) in its task's
-- `result`, written by the commit that marks the task done. Downloads read it a band of rows
-- at a time with substring().
ALTER TABLE tasks ALTER COLUMN result SET STORAGE EXTERNAL;
