-- 0004 load log: one row per (file, slice) load, so operators and asset checks can see what
-- each load read, inserted, skipped as duplicate and quarantined; and analyze_partition() so
-- sr_writer can refresh an events leaf's statistics mid-load (ANALYZE needs the owner).

CREATE TABLE load_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL CHECK (source_sha256 ~ '^[0-9a-f]{64}$'),
    -- NULL when the whole file was loaded; else the one pair this load was restricted to
    instrument VARCHAR(10),
    granularity VARCHAR(2),
    rows_read INTEGER NOT NULL CHECK (rows_read >= 0),
    rows_loaded INTEGER NOT NULL CHECK (rows_loaded >= 0),
    rows_duplicate INTEGER NOT NULL CHECK (rows_duplicate >= 0),
    rows_rejected INTEGER NOT NULL CHECK (rows_rejected >= 0),
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    CHECK (rows_read = rows_loaded + rows_duplicate + rows_rejected)
);
CREATE INDEX idx_load_log_source ON load_log (source_sha256);
CREATE INDEX idx_load_log_pair ON load_log (instrument, granularity, finished_at);
CREATE TRIGGER trg_load_log_updated_at BEFORE UPDATE ON load_log
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
COMMENT ON TABLE load_log IS 'One row per loader transaction (a file, or one pair of a file).';

CREATE FUNCTION analyze_partition(p_instrument text, p_granularity text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    leaf text;
BEGIN
    PERFORM check_partition_key(p_instrument, p_granularity);
    -- the events leaf only: it is what the levels' foreign-key checks probe
    leaf := 'new_resistance_events_' || lower(p_granularity) || '_' || lower(p_instrument);
    IF to_regclass(format('public.%I', leaf)) IS NOT NULL THEN
        EXECUTE format('ANALYZE public.%I', leaf);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION analyze_partition(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analyze_partition(text, text) TO sr_writer;
