-- placeholder, being written
CREATE TABLE placeholder_roster (x INTEGER);
