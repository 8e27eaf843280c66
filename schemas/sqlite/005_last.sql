-- placeholder, being written
CREATE TABLE placeholder_last (x INTEGER);
