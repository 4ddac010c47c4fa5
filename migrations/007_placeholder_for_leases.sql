-- PLACEHOLDER, not to be merged: migration 007 belongs to another branch (leases);
-- this empty step only keeps the numbering gap-free so 008 applies on this branch.
SELECT 1;
