-- Last activity (XEP-0012): when each user last logged out (seconds since
-- the Unix epoch, UTC) and the status text of that session's last
-- presence ('' if none).  One row per account, keyed by the primary key.
CREATE TABLE last_activity (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	seconds BIGINT NOT NULL,
	status TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
