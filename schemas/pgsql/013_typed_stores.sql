-- Typed stores (include/pigeon/store.h, src/store/store_kv.c): tables
-- that modules share instead of each creating its own, every row
-- belonging to an account (deleted with it).
--
-- user_kv: per account and namespace (the module's: 'private', 'vcard',
-- ...), key -> value.  Every query is by the primary key or its prefixes
-- (host, username, ns) and (host, username).
CREATE TABLE user_kv (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	ns TEXT NOT NULL,
	kv_key TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (host, username, ns, kv_key),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);

-- user_archive: per account and namespace, items in the order they were
-- appended (id), each with a time (ts, the caller's unit, e.g.
-- microseconds since the epoch), an optional key and a value.  Read by
-- ranges of id or ts within (host, username, ns).
CREATE TABLE user_archive (
	id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	ns TEXT NOT NULL,
	ts BIGINT NOT NULL,
	item_key TEXT,
	value TEXT NOT NULL,
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
CREATE INDEX user_archive_id ON user_archive (host, username, ns, id);
CREATE INDEX user_archive_ts ON user_archive (host, username, ns, ts);

-- mod_private (XEP-0049), mod_vcard (XEP-0054) and mod_push (XEP-0357)
-- keep their data here now: private XML under ns 'private' with the XML
-- namespace as key; the vCard under ns 'vcard', keys 'vcard' and
-- 'photo_hash'; push registrations under ns 'push', key the byte length
-- of the service's JID, ':', the JID and the node, value the publish
-- options ('' for none).
INSERT INTO user_kv (host, username, ns, kv_key, value)
	SELECT host, username, 'private', namespace, data
	FROM private_storage;
INSERT INTO user_kv (host, username, ns, kv_key, value)
	SELECT host, username, 'vcard', 'vcard', vcard FROM vcards;
INSERT INTO user_kv (host, username, ns, kv_key, value)
	SELECT host, username, 'vcard', 'photo_hash', photo_hash FROM vcards;
INSERT INTO user_kv (host, username, ns, kv_key, value)
	SELECT host, username, 'push',
		CAST(octet_length(jid) AS TEXT) || ':' || jid || node,
		COALESCE(options, '')
	FROM push_registrations;
DROP TABLE private_storage;
DROP TABLE vcards;
DROP TABLE push_registrations;
