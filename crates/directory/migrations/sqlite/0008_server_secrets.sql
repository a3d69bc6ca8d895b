-- Secrets every node of a deployment needs alike (the server key that APOP and TOTP
-- secrets are sealed under and that keys app-password and recovery-code hashes; later
-- the web page's cookie key), kept in the directory so that all nodes sharing it share
-- them too, and `poplar directory copy` carries them. Hex text; made on first start.
CREATE TABLE server_secrets (
    name       TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
