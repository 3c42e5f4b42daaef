-- The workers connected to each instance sharing PostgreSQL, as that instance last published
-- them (it does every second, and its speed figures at most every 30 s), so that any instance
-- can list every instance's workers. Only PostgreSQL has rows: SQLite's one instance lists its
-- own connections from memory.
CREATE TABLE connections (
    id           TEXT    PRIMARY KEY,
    instance     TEXT    NOT NULL,
    worker_id    TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    threads      BIGINT NOT NULL,
    user_agent   TEXT    NOT NULL,
    connected_at TEXT    NOT NULL,
    gflops       DOUBLE PRECISION NOT NULL,
    visible      BIGINT NOT NULL,
    on_battery   BIGINT NOT NULL
);
CREATE INDEX connections_of_instance ON connections (instance);
