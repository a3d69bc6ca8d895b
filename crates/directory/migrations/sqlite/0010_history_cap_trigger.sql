-- The sign-in history keeps the newest 50 entries per user (HISTORY_PER_USER). A
-- trigger trims it inside the INSERT itself, so recording a sign-in is one statement
-- (one round trip to the database thread) instead of a transaction of three.
CREATE TRIGGER sign_in_history_cap AFTER INSERT ON sign_in_history
BEGIN
    DELETE FROM sign_in_history
    WHERE user = NEW.user
      AND rowid NOT IN (
          SELECT rowid FROM sign_in_history
          WHERE user = NEW.user
          ORDER BY at DESC, rowid DESC
          LIMIT 50
      );
END;
