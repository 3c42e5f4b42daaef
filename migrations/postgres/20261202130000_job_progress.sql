-- Each instance counts the results it stores per job in its own row, summed on read with
-- `jobs.tasks_done` (which takes the refusals and audits off). One counter on the job's row,
-- bumped by every result batch, made each instance's batch wait for the others' commit: two
-- instances then stored results no faster than one (docs/benchmarks.md, "Scale-out").
CREATE TABLE job_progress (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    instance TEXT NOT NULL,
    done BIGINT NOT NULL,
    PRIMARY KEY (job_id, instance)
);
