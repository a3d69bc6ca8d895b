-- Sign-in defence state (see migrations/sqlite/0004_defence.sql for the meanings).
-- Times are milliseconds since the Unix epoch. Every node of a cluster counts into
-- these rows with single atomic statements, so failures spread over nodes add up.

CREATE TABLE auth_failures (
    "user"       TEXT COLLATE "C" NOT NULL,
    source       TEXT   NOT NULL,
    failures     BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    recent       TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY ("user", source)
);
CREATE INDEX auth_failures_by_source ON auth_failures (source, last_failure);
CREATE INDEX auth_failures_by_time ON auth_failures (last_failure);

CREATE TABLE account_failures (
    "user"       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    failures     BIGINT NOT NULL,
    last_failure BIGINT NOT NULL
);

CREATE TABLE familiar_networks (
    "user"        TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    network       TEXT   NOT NULL,
    first_success BIGINT NOT NULL,
    last_success  BIGINT NOT NULL,
    PRIMARY KEY ("user", network)
);
CREATE INDEX familiar_networks_by_network ON familiar_networks (network, last_success);

CREATE TABLE address_bans (
    source       TEXT   NOT NULL PRIMARY KEY,
    banned_at    BIGINT NOT NULL,
    banned_until BIGINT NOT NULL,
    accounts     BIGINT NOT NULL
);

-- Per-user allowed networks: comma-separated CIDRs; NULL allows every address.
ALTER TABLE users ADD COLUMN allowed_networks TEXT;
