-- Per-user archive quotas (mod_mam max_messages / max_bytes): the size
-- of each archive next to its count, kept by the same triggers, so that
-- a quota is checked against one row and never by summing the archive.
-- bytes is the UTF-8 length of the stored stanzas (what pigeond
-- measures before inserting: strlen of the serialised message).
ALTER TABLE mam_counts ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;

UPDATE mam_counts SET bytes = COALESCE((SELECT sum(length(CAST(m.stanza AS BLOB)))
	FROM mam_messages m WHERE m.host = mam_counts.host
	AND m.username = mam_counts.username), 0);

DROP TRIGGER mam_messages_counted_insert;
DROP TRIGGER mam_messages_counted_delete;
CREATE TRIGGER mam_messages_counted_insert AFTER INSERT ON mam_messages
BEGIN
	INSERT INTO mam_counts (host, username, n, bytes)
	VALUES (NEW.host, NEW.username, 1, length(CAST(NEW.stanza AS BLOB)))
	ON CONFLICT (host, username) DO UPDATE SET n = n + 1,
		bytes = bytes + length(CAST(NEW.stanza AS BLOB));
	INSERT INTO mam_with_counts (host, username, with_bare, n)
	VALUES (NEW.host, NEW.username, NEW.with_bare, 1)
	ON CONFLICT (host, username, with_bare) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER mam_messages_counted_delete AFTER DELETE ON mam_messages
BEGIN
	UPDATE mam_counts SET n = n - 1,
		bytes = bytes - length(CAST(OLD.stanza AS BLOB))
	WHERE host = OLD.host AND username = OLD.username;
	UPDATE mam_with_counts SET n = n - 1
	WHERE host = OLD.host AND username = OLD.username
	AND with_bare = OLD.with_bare;
	DELETE FROM mam_with_counts
	WHERE host = OLD.host AND username = OLD.username
	AND with_bare = OLD.with_bare AND n <= 0;
END;
