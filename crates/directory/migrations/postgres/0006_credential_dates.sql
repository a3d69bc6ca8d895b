-- Where each user's password stands (see migrations/sqlite/0006_credential_dates.sql).
ALTER TABLE users ADD COLUMN password_set_at TEXT;
ALTER TABLE users ADD COLUMN imported BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET imported = TRUE WHERE substr(password_hash, 1, 10) <> '$argon2id$';
