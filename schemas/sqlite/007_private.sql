-- Private XML storage (XEP-0049): per account and namespace, the
-- serialised elements of that namespace last set.  Read by primary key;
-- the per-account count uses its (host, username) prefix.
CREATE TABLE private_storage (
	host TEXT NOT NULL,
	username TEXT NOT NULL,
	namespace TEXT NOT NULL,
	data TEXT NOT NULL,
	PRIMARY KEY (host, username, namespace),
	FOREIGN KEY (host, username) REFERENCES accounts (host, username)
		ON DELETE CASCADE
);
