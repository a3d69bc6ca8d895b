-- Where each user's password stands, for the `poplar audit` report: when it was last
-- set through Poplar, and whether the password in use is still the one brought from
-- another server by `poplar user import`. Upgrading the stored hash at sign-in changes
-- neither: the password itself stays the same.
--
-- password_set_at: RFC 3339 UTC, like created_at. NULL: not known (the password was
-- set on the server it was imported from, or before this migration).
ALTER TABLE users ADD COLUMN password_set_at TEXT;
ALTER TABLE users ADD COLUMN imported INTEGER NOT NULL DEFAULT 0 CHECK (imported IN (0, 1));
-- Accounts made before this migration: only an import stores a hash other than
-- argon2id, so those are known to be imported; for the others it cannot be told.
UPDATE users SET imported = 1 WHERE substr(password_hash, 1, 10) <> '$argon2id$';
