-- mod_push (XEP-0357): placeholder
SELECT 1;
