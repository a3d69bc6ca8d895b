-- Two-factor sign-in (TOTP, RFC 6238) and app passwords.

-- One TOTP secret per user, sealed under the server key (it must be recoverable to
-- compute codes). `confirmed` = 0 while an enrolment waits for its first code;
-- `last_step` is the last accepted 30 s step, so a code is accepted at most once.
CREATE TABLE mfa (
    user        TEXT    NOT NULL PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
    totp_secret TEXT    NOT NULL,
    confirmed   INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1)),
    last_step   INTEGER NOT NULL DEFAULT 0,
    enrolled_at INTEGER NOT NULL
) STRICT;

-- Single-use recovery codes, as keyed hashes.
CREATE TABLE recovery_codes (
    user      TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    code_hash TEXT    NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user, code_hash)
) STRICT;

-- App passwords: random, shown once, stored as keyed hashes (unique, so a sign-in finds
-- its row by the hash alone). NULL expires_at: no expiry; NULL networks: anywhere.
CREATE TABLE app_passwords (
    id             INTEGER PRIMARY KEY,
    user           TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    label          TEXT    NOT NULL,
    hash           TEXT    NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    networks       TEXT,
    read_only      INTEGER NOT NULL DEFAULT 0 CHECK (read_only IN (0, 1)),
    last_used_at   INTEGER,
    last_used_from TEXT
) STRICT;
CREATE INDEX app_passwords_by_user ON app_passwords (user);

-- Per-user two-factor policy: NULL follows the server default, else 'off', 'optional'
-- or 'required'.
ALTER TABLE users ADD COLUMN mfa_policy TEXT
    CHECK (mfa_policy IS NULL OR mfa_policy IN ('off', 'optional', 'required'));
