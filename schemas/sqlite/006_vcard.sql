-- placeholder, being written
CREATE TABLE placeholder_vcard (x INTEGER);
