-- RFC 6121 §3.1.3: an inbound subscription request kept for a user who
-- is offline is delivered as it came, extensions included (XEP-0379
-- <preauth/>, ...): stanza is the whole <presence type='subscribe'/>,
-- serialised with jabber:client in scope and without to/from (mod_roster
-- readdresses it), at most 4096 bytes; NULL for rows written before this
-- migration or requests too large, which are rebuilt from status and
-- nick as before.
ALTER TABLE roster_pending ADD COLUMN stanza TEXT;
