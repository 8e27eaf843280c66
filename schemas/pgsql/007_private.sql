-- placeholder, being written
CREATE TABLE placeholder_private (x INTEGER);
