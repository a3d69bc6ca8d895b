-- SCRAM-SHA-256 keys in the RFC 5803 form (see migrations/sqlite/0002_scram.sql).
ALTER TABLE users ADD COLUMN scram_sha256 TEXT;
