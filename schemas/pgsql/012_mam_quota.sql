-- Per-user archive quotas (mod_mam max_messages / max_bytes): the size
-- of each archive next to its count, kept by the same trigger, so that
-- a quota is checked against one row and never by summing the archive.
-- bytes is the UTF-8 length of the stored stanzas (what pigeond
-- measures before inserting: strlen of the serialised message).
ALTER TABLE mam_counts ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;

UPDATE mam_counts SET bytes = COALESCE((SELECT sum(octet_length(m.stanza))
	FROM mam_messages m WHERE m.host = mam_counts.host
	AND m.username = mam_counts.username), 0);

CREATE OR REPLACE FUNCTION mam_messages_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO mam_counts (host, username, n, bytes)
		VALUES (NEW.host, NEW.username, 1, octet_length(NEW.stanza))
		ON CONFLICT (host, username)
		DO UPDATE SET n = mam_counts.n + 1,
			bytes = mam_counts.bytes + octet_length(NEW.stanza);
		INSERT INTO mam_with_counts (host, username, with_bare, n)
		VALUES (NEW.host, NEW.username, NEW.with_bare, 1)
		ON CONFLICT (host, username, with_bare)
		DO UPDATE SET n = mam_with_counts.n + 1;
		RETURN NEW;
	END IF;
	UPDATE mam_counts SET n = n - 1,
		bytes = bytes - octet_length(OLD.stanza)
	WHERE host = OLD.host AND username = OLD.username;
	DELETE FROM mam_with_counts
	WHERE host = OLD.host AND username = OLD.username
	AND with_bare = OLD.with_bare AND n <= 1;
	UPDATE mam_with_counts SET n = n - 1
	WHERE host = OLD.host AND username = OLD.username
	AND with_bare = OLD.with_bare;
	RETURN OLD;
END
$$;
