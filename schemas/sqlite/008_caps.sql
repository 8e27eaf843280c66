-- Entity capabilities (XEP-0115): disco#info features of verified
-- (hash, ver) pairs, shared by every account and host.  features is the
-- sorted list of feature vars joined by newlines.
CREATE TABLE caps (
	hash TEXT NOT NULL,
	ver TEXT NOT NULL,
	features TEXT NOT NULL,
	created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
	PRIMARY KEY (hash, ver)
);
