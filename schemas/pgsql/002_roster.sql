-- Rosters (RFC 6121 §2) and subscription state (§3), owned by mod_roster.
--
-- roster: one row per item the user sees.  Other modules rely on the
-- columns username, host, jid (the contact's bare JID) and subscription
-- (e.g. mod_last: subscription IN ('from','both')).  ask = 1 means our
-- subscription request is pending (Pending Out); approved = 1 is a
-- pre-approval (§3.4); groups are newline separated (a group name holds no
-- control characters); ver is the roster version at the item's last change.
CREATE TABLE roster (
	username TEXT NOT NULL,
	host TEXT NOT NULL,
	jid TEXT NOT NULL,
	name TEXT,
	subscription TEXT NOT NULL DEFAULT 'none'
		CHECK (subscription IN ('none', 'to', 'from', 'both')),
	ask INTEGER NOT NULL DEFAULT 0,
	approved INTEGER NOT NULL DEFAULT 0,
	groups TEXT,
	ver BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (host, username, jid),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);

-- The user's roster version counter (§2.6); versions at or below min_ver
-- may have lost tombstones, so clients that old get the whole roster.
CREATE TABLE roster_version (
	username TEXT NOT NULL,
	host TEXT NOT NULL,
	ver BIGINT NOT NULL DEFAULT 0,
	min_ver BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);

-- Tombstones of removed items, for pushes of only the changes (§2.6.3).
CREATE TABLE roster_removed (
	username TEXT NOT NULL,
	host TEXT NOT NULL,
	jid TEXT NOT NULL,
	ver BIGINT NOT NULL,
	PRIMARY KEY (host, username, jid),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
CREATE INDEX roster_removed_ver ON roster_removed (host, username, ver);

-- Inbound subscription requests not answered yet (Pending In, §3.1.3),
-- re-delivered at every login until answered.  Only the request's status
-- and nick (XEP-0172) are kept.
CREATE TABLE roster_pending (
	username TEXT NOT NULL,
	host TEXT NOT NULL,
	jid TEXT NOT NULL,
	status TEXT,
	nick TEXT,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (host, username, jid),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
