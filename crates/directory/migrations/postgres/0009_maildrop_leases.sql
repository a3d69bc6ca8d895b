-- Maildrop leases (see migrations/sqlite/0009_maildrop_leases.sql).
CREATE TABLE maildrop_leases (
    maildrop   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
