-- Push notifications (XEP-0357): the app servers a user enabled.
-- jid is the prepared JID of the XMPP Push Service, node its node;
-- options is the publish-options data form as the client gave it
-- (serialised XML) or NULL; created is in Unix seconds (UTC).  Every
-- query is by the primary key or its prefix (host, username) and
-- (host, username, jid): no other index is needed.
CREATE TABLE push_registrations (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	jid TEXT NOT NULL,
	node TEXT NOT NULL,
	options TEXT,
	created BIGINT NOT NULL,
	PRIMARY KEY (host, username, jid, node),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
