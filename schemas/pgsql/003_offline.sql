-- placeholder, being written
CREATE TABLE placeholder_offline (x INTEGER);
