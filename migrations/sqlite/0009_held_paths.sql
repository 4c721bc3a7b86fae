-- Held before this version, a request's path carried its query string:
-- keep only its length.
UPDATE approvals SET query_bytes = length(path) - instr(path, '?'), path = substr(path, 1, instr(path, '?') - 1)
WHERE instr(path, '?') > 0;
