-- The PostgreSQL twin of migrations/sqlite: the same tables, columns and meanings, so
-- `poplar directory copy` moves rows one to one. Differences are only of dialect:
-- BOOLEAN for the 0/1 columns, BIGINT for integers, `"user"` quoted (a reserved word
-- here), and COLLATE "C" on names so they compare and sort by bytes as in SQLite.

-- Users of the POP3 service. Names arrive already canonical (see the auth crate's
-- UsernamePolicy), so the primary key compares bytes.
CREATE TABLE users (
    name          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    maildir       TEXT    NOT NULL,
    -- RFC 3339 UTC timestamps, so they read the same in SQLite and PostgreSQL.
    created_at    TEXT    NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    updated_at    TEXT    NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
);
