-- 0004 down: the load log is history only (no event data), so it is dropped without a guard.
DROP FUNCTION analyze_partition(text, text);
DROP TABLE load_log;
