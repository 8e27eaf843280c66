-- Offline messages (XEP-0160), written by mod_offline.
-- id gives the per-user delivery order (pigeond inserts on one
-- connection, one statement at a time, so ids grow in commit order).
-- stanza is the serialised message with the server's <delay/>.
-- created_at is in Unix seconds (UTC), for delete_old_messages; the
-- same integer is written by both storage drivers.
CREATE TABLE offline_messages (
	id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	stanza TEXT NOT NULL,
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
-- "The messages of user X in order" is a range scan of this index; it
-- also serves the cascade when an account is deleted.
CREATE INDEX offline_messages_user ON offline_messages (host, username, id);
-- delete_old_messages.
CREATE INDEX offline_messages_created ON offline_messages (created_at);

-- "How many for user X" (the quota check on every store) in one row
-- lookup, kept by the trigger below whoever inserts or deletes
-- (delivery, delete_old_messages, account deletion).  A count(*) would
-- visit every recent heap tuple of the user (index-only scans need the
-- visibility map), which made large backlogs quadratic.
CREATE TABLE offline_counts (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);

CREATE FUNCTION offline_messages_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO offline_counts (host, username, n)
		VALUES (NEW.host, NEW.username, 1)
		ON CONFLICT (host, username)
		DO UPDATE SET n = offline_counts.n + 1;
		RETURN NEW;
	END IF;
	UPDATE offline_counts SET n = n - 1
	WHERE host = OLD.host AND username = OLD.username;
	RETURN OLD;
END
$$;

CREATE TRIGGER offline_messages_counted
AFTER INSERT OR DELETE ON offline_messages
FOR EACH ROW EXECUTE FUNCTION offline_messages_count();
