-- Sign-in defence state (the auth crate's LockoutPolicy decides; these tables remember).
-- Times are milliseconds since the Unix epoch, read through the server's one clock.

-- Failures per (user as given, source address: IPv4 /32 or IPv6 /64). `recent` holds
-- keyed hashes of the last few wrong secrets (never the secrets), so a client retrying
-- one stale password is counted once. Rows exist for unknown names too: an attacker
-- must not see a difference, and spraying is counted per source over these rows.
CREATE TABLE auth_failures (
    user         TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    failures     INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    recent       TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (user, source)
) STRICT;
CREATE INDEX auth_failures_by_source ON auth_failures (source, last_failure);
CREATE INDEX auth_failures_by_time ON auth_failures (last_failure);

-- Failures from networks unfamiliar to the account, toward its lock for unfamiliar
-- networks only.
CREATE TABLE account_failures (
    user         TEXT    NOT NULL PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure INTEGER NOT NULL
) STRICT;

-- Networks (IPv4 /24, IPv6 /64) each user has signed in from, with the last success.
-- A table of its own, not a bounded history that a polling client would flush.
CREATE TABLE familiar_networks (
    user          TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    network       TEXT    NOT NULL,
    first_success INTEGER NOT NULL,
    last_success  INTEGER NOT NULL,
    PRIMARY KEY (user, network)
) STRICT;
CREATE INDEX familiar_networks_by_network ON familiar_networks (network, last_success);

-- Source addresses banned for failing across many accounts (spraying).
CREATE TABLE address_bans (
    source       TEXT    NOT NULL PRIMARY KEY,
    banned_at    INTEGER NOT NULL,
    banned_until INTEGER NOT NULL,
    accounts     INTEGER NOT NULL
) STRICT;

-- Per-user allowed networks: comma-separated CIDRs; NULL allows every address.
ALTER TABLE users ADD COLUMN allowed_networks TEXT;
