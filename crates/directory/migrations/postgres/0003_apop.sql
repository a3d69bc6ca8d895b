-- The APOP secret, encrypted under the server key (see migrations/sqlite/0003_apop.sql).
ALTER TABLE users ADD COLUMN apop_secret TEXT;
