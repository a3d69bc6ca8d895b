-- Users of the POP3 service. Names arrive already canonical (see the auth crate's
-- UsernamePolicy), so the primary key compares bytes (SQLite's BINARY collation).
CREATE TABLE users (
    name          TEXT    NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    maildir       TEXT    NOT NULL,
    -- RFC 3339 UTC timestamps, so they read the same in SQLite and PostgreSQL.
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
