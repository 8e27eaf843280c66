-- placeholder, being written
CREATE TABLE placeholder_caps (x INTEGER);
