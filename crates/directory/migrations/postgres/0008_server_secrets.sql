-- Secrets every node needs alike (see migrations/sqlite/0008_server_secrets.sql).
CREATE TABLE server_secrets (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
);
