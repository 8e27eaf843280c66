-- Accounts with SCRAM credentials (base64, from pgn_scram_creds_encode).
-- A clear password is never stored.
CREATE TABLE accounts (
	username TEXT NOT NULL,
	host TEXT NOT NULL,
	salt TEXT NOT NULL,
	iterations INTEGER NOT NULL CHECK (iterations > 0),
	sha1_stored_key TEXT NOT NULL,
	sha1_server_key TEXT NOT NULL,
	sha256_stored_key TEXT NOT NULL,
	sha256_server_key TEXT NOT NULL,
	created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
	PRIMARY KEY (host, username)
);
