-- mod_mam (XEP-0313): placeholder
SELECT 1;
