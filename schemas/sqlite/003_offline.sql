-- Offline messages (XEP-0160), written by mod_offline.
-- id gives the per-user delivery order: AUTOINCREMENT never reuses an id,
-- so a message stored later always sorts after the ones before it.
-- stanza is the serialised message with the server's <delay/>.
-- created_at is in Unix seconds (UTC), for delete_old_messages.
CREATE TABLE offline_messages (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	created_at INTEGER NOT NULL,
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
-- lookup, kept by the triggers below whoever inserts or deletes
-- (delivery, delete_old_messages, account deletion).
CREATE TABLE offline_counts (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);

CREATE TRIGGER offline_messages_counted AFTER INSERT ON offline_messages
BEGIN
	INSERT INTO offline_counts (host, username, n)
	VALUES (NEW.host, NEW.username, 1)
	ON CONFLICT (host, username) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER offline_messages_uncounted AFTER DELETE ON offline_messages
BEGIN
	UPDATE offline_counts SET n = n - 1
	WHERE host = OLD.host AND username = OLD.username;
END;
