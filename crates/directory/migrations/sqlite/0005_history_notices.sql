-- Recent sign-ins per user (bounded: the newest 50 are kept), for the user's own page
-- and `poplar user history`. The smart lockout does not read this: it has its own table
-- of familiar networks, which a polling client cannot flush.
CREATE TABLE sign_in_history (
    user      TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    at        INTEGER NOT NULL,
    address   TEXT    NOT NULL,
    mechanism TEXT    NOT NULL,
    result    TEXT    NOT NULL
) STRICT;
CREATE INDEX sign_in_history_by_user ON sign_in_history (user, at);

-- Security notices (a message in the user's own maildrop after a sign-in from a new
-- network or an account lock): 1 = on (the default), 0 = off for this user.
ALTER TABLE users ADD COLUMN notices INTEGER NOT NULL DEFAULT 1 CHECK (notices IN (0, 1));
