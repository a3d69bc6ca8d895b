-- Recent sign-ins per user (bounded: the newest 50 are kept). `id` stands in for
-- SQLite's rowid as the tie-break between sign-ins of the same millisecond.
CREATE TABLE sign_in_history (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user"    TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    at        BIGINT NOT NULL,
    address   TEXT   NOT NULL,
    mechanism TEXT   NOT NULL,
    result    TEXT   NOT NULL
);
CREATE INDEX sign_in_history_by_user ON sign_in_history ("user", at);

-- Security notices: on (the default) or off for this user.
ALTER TABLE users ADD COLUMN notices BOOLEAN NOT NULL DEFAULT TRUE;
