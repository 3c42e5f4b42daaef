-- The workers connected to each instance sharing PostgreSQL, as that instance last published
-- them (it does every second, and its speed figures at most every 30 s), so that any instance
-- can list every instance's workers. Only PostgreSQL has rows: SQLite's one instance lists its
-- own connections from memory.
CREATE TABLE connections (
    id           TEXT    PRIMARY KEY,
    instance     TEXT    NOT NULL,
    worker_id    TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    threads      INTEGER NOT NULL,
    user_agent   TEXT    NOT NULL,
    connected_at TEXT    NOT NULL,
    gflops       REAL NOT NULL,
    visible      INTEGER NOT NULL,
    on_battery   INTEGER NOT NULL
) STRICT;
CREATE INDEX connections_of_instance ON connections (instance);
