-- placeholder, being written
CREATE TABLE placeholder_blocking (x INTEGER);
