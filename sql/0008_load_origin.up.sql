-- 0008 load origin: which face made a load (cli, dagster; NULL: before 0008, or the library
-- called directly) and the rows it stored per pair, so Dagster can report the partitions of
-- loads made outside it (external_loads_sensor) without reporting its own twice.

ALTER TABLE load_log
    ADD COLUMN origin TEXT CHECK (origin ~ '^[a-z][a-z0-9_]{0,31}$'),
    ADD COLUMN pairs JSONB CHECK (jsonb_typeof(pairs) = 'object');
COMMENT ON COLUMN load_log.origin IS
    'The face that made the load: cli, dagster (NULL before migration 0008 or from the library).';
COMMENT ON COLUMN load_log.pairs IS
    'Rows stored per pair: {"INSTRUMENT/GRANULARITY": rows} (NULL before migration 0008).';
