-- What each instance carries, so that every instance can show the whole grid's figures.
ALTER TABLE instances ADD COLUMN workers BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN dashboards BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN tasks_per_sec DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN gflops DOUBLE PRECISION NOT NULL DEFAULT 0;
