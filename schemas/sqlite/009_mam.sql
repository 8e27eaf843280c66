-- Message archive (XEP-0313) and archiving preferences (XEP-0441), owned
-- by mod_mam.
--
-- mam_messages: one row per archived message per archive (the sender's
-- and the recipient's archives each get their own row).  id is the
-- archive order: pigeond inserts on the store's one connection, in the
-- order it submits, so ids grow in the order messages were archived and
-- are never reused (AUTOINCREMENT).  ts is the archiving time in
-- microseconds since the Unix epoch (UTC), assigned by pigeond when it
-- submits the row, so that ts never decreases as id grows (unless the
-- system clock is stepped back): a time bound is turned into an id bound
-- through mam_messages_ts.  stanza_id is the XEP-0359 id given to
-- clients (random, unique per archive); origin_id the client's
-- <origin-id/> (XEP-0359), kept for deduplication; with_bare and
-- with_resource the peer (to for outgoing, from for incoming); outgoing
-- is 1 for messages the user sent; stanza the serialised message.
CREATE TABLE mam_messages (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	ts INTEGER NOT NULL,
	stanza_id TEXT NOT NULL,
	origin_id TEXT,
	with_bare TEXT NOT NULL,
	with_resource TEXT,
	outgoing INTEGER NOT NULL DEFAULT 0,
	stanza TEXT NOT NULL,
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
-- "Everything after an id" and the whole archive in order (also the
-- cascade when an account is deleted).
CREATE INDEX mam_messages_user ON mam_messages (host, username, id);
-- "The newest page of one conversation".
CREATE INDEX mam_messages_with ON mam_messages (host, username, with_bare, id);
-- RSM after/before and the before-id/after-id/ids fields name messages
-- by stanza id.
CREATE UNIQUE INDEX mam_messages_sid ON mam_messages (host, username, stanza_id);
-- start/end bounds (the first/last id at a time) and retention; the rowid
-- is the implicit last column, so ties are in id order.
CREATE INDEX mam_messages_ts ON mam_messages (ts);

-- RSM <count/> of a whole archive, and of one conversation, in one row
-- lookup (a count(*) over a large archive costs tens of milliseconds),
-- kept by the triggers below whoever inserts or deletes (mod_mam,
-- retention, account deletion).
CREATE TABLE mam_counts (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
CREATE TABLE mam_with_counts (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	with_bare TEXT NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (host, username, with_bare),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
CREATE TRIGGER mam_messages_counted_insert AFTER INSERT ON mam_messages
BEGIN
	INSERT INTO mam_counts (host, username, n)
	VALUES (NEW.host, NEW.username, 1)
	ON CONFLICT (host, username) DO UPDATE SET n = n + 1;
	INSERT INTO mam_with_counts (host, username, with_bare, n)
	VALUES (NEW.host, NEW.username, NEW.with_bare, 1)
	ON CONFLICT (host, username, with_bare) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER mam_messages_counted_delete AFTER DELETE ON mam_messages
BEGIN
	UPDATE mam_counts SET n = n - 1
	WHERE host = OLD.host AND username = OLD.username;
	UPDATE mam_with_counts SET n = n - 1
	WHERE host = OLD.host AND username = OLD.username
	AND with_bare = OLD.with_bare;
	DELETE FROM mam_with_counts
	WHERE host = OLD.host AND username = OLD.username
	AND with_bare = OLD.with_bare AND n <= 0;
END;

-- Preferences (XEP-0441): the default ('always', 'never', 'roster') and
-- the always/never JID lists, newline separated (a JID never contains a
-- control character).  No row: the server default ('always').
CREATE TABLE mam_prefs (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	default_mode TEXT NOT NULL
		CHECK (default_mode IN ('always', 'never', 'roster')),
	always_jids TEXT NOT NULL DEFAULT '',
	never_jids TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
