-- What each instance carries, so that every instance can show the whole grid's figures.
ALTER TABLE instances ADD COLUMN workers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN dashboards INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN tasks_per_sec REAL NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN gflops REAL NOT NULL DEFAULT 0;
