-- The APOP secret, encrypted under the server key (APOP needs the secret itself to
-- compute its MD5 digest, so it cannot be hashed). NULL: APOP is off for this user.
ALTER TABLE users ADD COLUMN apop_secret TEXT;
