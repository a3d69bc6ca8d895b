-- Maildrop exclusivity across nodes: the lease behind [IN-USE] when several nodes
-- serve one Maildir tree. `maildrop` is the Maildir's path as the directory stores it,
-- `owner` the session holding it (node and session id), `expires_at` milliseconds
-- since the Unix epoch on the database's own clock (one clock for every node). A
-- session renews its lease while it lives; a node that dies leaves it to expire.
CREATE TABLE maildrop_leases (
    maildrop   TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
