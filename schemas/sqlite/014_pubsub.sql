-- PubSub and PEP (XEP-0060, XEP-0163): modules/pubsub/, doc/design/pubsub.md.
--
-- pubsub_node: one row per node.  service is the JID that hosts it: the
-- owner's bare JID for PEP, the service domain ('pubsub.example.org')
-- otherwise.  host is the local host whose module serves it.  For PEP,
-- username is the owning account: its nodes (and through them items,
-- affiliations, subscriptions) go with the account; NULL for nodes of a
-- generic service.  config is the node configuration as
-- ps_config_encode() writes it ("key=value" lines).
CREATE TABLE pubsub_node (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	service TEXT NOT NULL,
	node TEXT NOT NULL,
	host TEXT NOT NULL,
	username TEXT,
	config TEXT NOT NULL,
	created BIGINT NOT NULL,
	UNIQUE (service, node),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
CREATE INDEX pubsub_node_account ON pubsub_node (host, username);

-- pubsub_item: the items of a node.  ts (microseconds since the epoch,
-- strictly growing per node: the engine makes it so) orders them, newest
-- last; republishing an item id replaces it and makes it the newest.
-- payload is the item's child element serialised (may be '').
CREATE TABLE pubsub_item (
	node_id BIGINT NOT NULL REFERENCES pubsub_node (id) ON DELETE CASCADE,
	item_id TEXT NOT NULL,
	ts BIGINT NOT NULL,
	publisher TEXT NOT NULL,
	payload TEXT NOT NULL,
	PRIMARY KEY (node_id, item_id)
);
CREATE INDEX pubsub_item_newest ON pubsub_item (node_id, ts);

-- pubsub_affiliation: owner, publisher, publish-only, member, outcast of
-- a bare JID on a node ('none' is the absence of a row).
CREATE TABLE pubsub_affiliation (
	node_id BIGINT NOT NULL REFERENCES pubsub_node (id) ON DELETE CASCADE,
	jid TEXT NOT NULL,
	affiliation TEXT NOT NULL,
	PRIMARY KEY (node_id, jid)
);
CREATE INDEX pubsub_affiliation_jid ON pubsub_affiliation (jid);

-- pubsub_subscription: one subscription per (node, JID as subscribed:
-- bare or full); state subscribed, pending or unconfigured.
CREATE TABLE pubsub_subscription (
	node_id BIGINT NOT NULL REFERENCES pubsub_node (id) ON DELETE CASCADE,
	jid TEXT NOT NULL,
	subid TEXT NOT NULL,
	state TEXT NOT NULL,
	PRIMARY KEY (node_id, jid)
);
CREATE INDEX pubsub_subscription_jid ON pubsub_subscription (jid);
