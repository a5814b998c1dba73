-- 0003 down: the functions only; partitions they made stay (they hold data).
DROP FUNCTION list_partitions(boolean);
DROP FUNCTION ensure_partition(text, text);
DROP FUNCTION check_partition_key(text, text);
