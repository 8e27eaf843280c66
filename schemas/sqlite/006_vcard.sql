-- vcard-temp (XEP-0054): one serialised <vCard/> per account, with the
-- SHA-1 (hex) of its decoded PHOTO/BINVAL for XEP-0153 ('' if none).
-- Read by primary key only.
CREATE TABLE vcards (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	vcard TEXT NOT NULL,
	photo_hash TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (host, username),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
