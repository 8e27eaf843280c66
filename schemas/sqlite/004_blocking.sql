-- Blocking command (XEP-0191): one row per blocked JID of a user.
-- jid is the prepared JID as the user gave it (full, bare, domain/resource
-- or domain).  The primary key serves "the list of user X" (prefix
-- host, username) and duplicate detection.
CREATE TABLE blocklist (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	jid TEXT NOT NULL,
	PRIMARY KEY (host, username, jid),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
