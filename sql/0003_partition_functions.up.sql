-- 0003 partition management. Runtime partition DDL goes through these functions only.

-- ensure_partition(instrument, granularity): creates the missing leaf partitions of that pair
-- in every partitioned table and returns how many it made (0 when all exist). The levels leaf
-- gets its foreign key into the events leaf of the same pair (see 0002). The instrument
-- is validated and every identifier quoted with format(%I / %L); concurrent callers serialise
-- on an advisory lock, so two loaders racing for a new instrument both succeed.
-- SECURITY DEFINER: sr_writer may call it without owning the tables.
-- check_partition_key(instrument, granularity): raises 22023 unless both may name a partition.
-- Every function that turns them into identifiers calls it first.
CREATE FUNCTION check_partition_key(p_instrument text, p_granularity text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog
AS $$
BEGIN
    IF p_instrument IS NULL OR p_instrument !~ '^[A-Z0-9][A-Z0-9_]{0,9}$' THEN
        RAISE EXCEPTION 'invalid instrument %: must match ^[A-Z0-9][A-Z0-9_]{0,9}$',
            coalesce(quote_literal(p_instrument), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_granularity IS NULL OR p_granularity NOT IN ('W', 'D', 'H4', 'H1') THEN
        RAISE EXCEPTION 'invalid granularity %: must be one of W, D, H4, H1',
            coalesce(quote_literal(p_granularity), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION ensure_partition(p_instrument text, p_granularity text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    t text;
    parent text;
    leaf text;
    created integer := 0;
BEGIN
    PERFORM check_partition_key(p_instrument, p_granularity);

    PERFORM pg_advisory_xact_lock(hashtext('sr_platform.ensure_partition'));

    -- events before levels: the levels leaf references the events leaf
    FOREACH t IN ARRAY ARRAY['new_resistance_events', 'support_and_resistance_master',
                             'event_features'] LOOP
        parent := t || '_' || lower(p_granularity);
        leaf := parent || '_' || lower(p_instrument);
        IF to_regclass(format('public.%I', leaf)) IS NULL THEN
            EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES IN (%L)',
                           leaf, parent, p_instrument);
            IF t = 'support_and_resistance_master' THEN
                EXECUTE format(
                    'ALTER TABLE public.%I ADD CONSTRAINT %I FOREIGN KEY '
                    '(instrument, granularity, event_creation_date, original_event_id) '
                    'REFERENCES public.%I (instrument, granularity, event_creation_date, '
                    'original_event_id) ON DELETE CASCADE',
                    leaf, leaf || '_event_fkey',
                    'new_resistance_events_' || lower(p_granularity) || '_'
                        || lower(p_instrument));
            END IF;
            -- statistics from the start: unanalysed leaves get seq-scan plans for FK checks
            EXECUTE format('ANALYZE public.%I', leaf);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

REVOKE EXECUTE ON FUNCTION ensure_partition(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_partition(text, text) TO sr_writer;
GRANT EXECUTE ON FUNCTION check_partition_key(text, text) TO sr_reader;

-- list_partitions(exact): one row per leaf partition with its row count (the planner's
-- estimate by default, count(*) when exact) and its size on disk, indexes included.
CREATE FUNCTION list_partitions(exact boolean DEFAULT false)
RETURNS TABLE (table_name text, partition_name text, granularity text, instrument text,
               row_count bigint, total_bytes bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT root.relname::text AS root_name, leaf.oid AS leaf_oid,
               leaf.relname::text AS leaf_name,
               (regexp_match(pg_get_expr(mid.relpartbound, mid.oid), $re$IN \('(.*)'\)$re$))[1]
                   AS gran,
               (regexp_match(pg_get_expr(leaf.relpartbound, leaf.oid), $re$IN \('(.*)'\)$re$))[1]
                   AS instr,
               greatest(leaf.reltuples, 0)::bigint AS estimate
        FROM unnest(ARRAY['new_resistance_events', 'support_and_resistance_master',
                          'event_features']) AS t(name)
        JOIN pg_class root ON root.oid = to_regclass('public.' || t.name)
        JOIN pg_inherits i1 ON i1.inhparent = root.oid
        JOIN pg_class mid ON mid.oid = i1.inhrelid
        JOIN pg_inherits i2 ON i2.inhparent = mid.oid
        JOIN pg_class leaf ON leaf.oid = i2.inhrelid
        WHERE pg_get_expr(leaf.relpartbound, leaf.oid) <> 'FOR VALUES IN (NULL)'  -- guards
        ORDER BY 1, 4, 5
    LOOP
        table_name := r.root_name;
        partition_name := r.leaf_name;
        granularity := r.gran;
        instrument := r.instr;
        total_bytes := pg_total_relation_size(r.leaf_oid);
        IF exact THEN
            EXECUTE format('SELECT count(*) FROM public.%I', r.leaf_name) INTO row_count;
        ELSE
            row_count := r.estimate;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION list_partitions(boolean) TO sr_reader;
