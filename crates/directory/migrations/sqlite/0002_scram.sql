-- SCRAM-SHA-256 keys in the RFC 5803 form, derived whenever a password is set while
-- SCRAM is enabled (NULL: none yet, e.g. an imported account before its first sign-in).
ALTER TABLE users ADD COLUMN scram_sha256 TEXT;
