-- Migration 0007: level ids without a random number per row, and the registry written in key
-- order, for load-then-attach (sql/0006).
--
-- Every level row the loader writes gets id = level_id(its event's id): the MD5 digest of a
-- fixed namespace (uuid5(NAMESPACE_URL, 'https://sr-platform/support_and_resistance_master'))
-- followed by the event id's 16 bytes, read as a uuid. One level per event, so the ids are as
-- unique as the events' (an MD5 collision aside), and the same event always gets the same level
-- id: a reload, a rebuild or a restore from Parquet writes the same ids. The version and variant
-- bits are not set (so it is not an RFC 9562 version-3 UUID): setting them in SQL tripled the
-- cost. Why not gen_random_uuid(), the column's default (still used by every other insert):
-- this PostgreSQL (the embedded build) has no OpenSSL and reads /dev/urandom for each value,
-- 5.5 us a row, 2.2 s of a 400k-row new partition's 9 s attach; level_id() costs 0.7 us.
-- The loader computes the same function in Python for the rows it COPYs into existing leaves
-- (sr_platform/core/loader.py level_ids(); a test checks both agree).
--
-- attach_staged_partitions() (0006) is replaced by the same function with two changes: the
-- level rows' ids, and the registry INSERT ordered by id.

CREATE FUNCTION level_id(p_event uuid) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- one expression, no SET clause: the planner inlines it into the INSERT ... SELECT
RETURN pg_catalog.md5('\xc331958de54e5ac6a655153dfb3b3bb6'::bytea
                      || pg_catalog.uuid_send(p_event))::uuid;

CREATE OR REPLACE FUNCTION attach_staged_partitions(p_instruments text[], p_granularities text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
SET maintenance_work_mem = '256MB'
AS $$
DECLARE
    p record;
    t text;
    gran text;
    ev text;
    lv text;
    ft text;
BEGIN
    FOR p IN SELECT DISTINCT i, g FROM unnest(p_instruments, p_granularities) AS x(i, g)
             ORDER BY i, g LOOP
        PERFORM check_partition_key(p.i, p.g);
        PERFORM pg_advisory_xact_lock(7004002, hashtext(p.i || '/' || p.g));
        ev := 'new_resistance_events_' || lower(p.g) || '_' || lower(p.i);
        lv := 'support_and_resistance_master_' || lower(p.g) || '_' || lower(p.i);
        ft := 'event_features_' || lower(p.g) || '_' || lower(p.i);
        -- only tables staged by this transaction: standalone and created by it (xmin)
        IF (SELECT count(*) FROM pg_class c
            WHERE c.oid IN (to_regclass(format('public.%I', ev)),
                            to_regclass(format('public.%I', lv)),
                            to_regclass(format('public.%I', ft)))
              AND NOT c.relispartition AND c.relkind = 'r'
              AND c.xmin = pg_current_xact_id()::xid) <> 3 THEN
            RAISE EXCEPTION 'no staged partition of % % in this transaction', p.i, p.g
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        -- one level row per event (the loader's levels: every event of a staged leaf is
        -- this load's), written here rather than sent and parsed a second time; its id is
        -- level_id() of the event's
        EXECUTE format('INSERT INTO public.%I (id, original_event_id, event_type, '
                       'instrument, granularity, event_creation_date) SELECT '
                       'public.level_id(original_event_id), original_event_id, event_type, '
                       'instrument, granularity, event_creation_date FROM public.%I', lv, ev);
        -- the parents' indexes (0002), built on the filled tables
        EXECUTE format('ALTER TABLE public.%I ADD PRIMARY KEY (instrument, granularity, '
                       'event_creation_date, original_event_id)', ev);
        EXECUTE format('CREATE INDEX ON public.%I (instrument, granularity)', ev);
        EXECUTE format('CREATE INDEX ON public.%I (event_creation_date DESC)', ev);
        EXECUTE format('CREATE INDEX ON public.%I (event_price_level)', ev);
        EXECUTE format('ALTER TABLE public.%I ADD PRIMARY KEY (instrument, granularity, '
                       'event_creation_date, id), ADD UNIQUE (instrument, granularity, '
                       'event_creation_date, original_event_id)', lv);
        EXECUTE format('ALTER TABLE public.%I ADD PRIMARY KEY (instrument, granularity, '
                       'event_creation_date, original_event_id)', ft);
        EXECUTE format('CREATE INDEX ON public.%I (event_creation_date)', ft);
        -- one validating query for the whole leaf instead of a check per row
        EXECUTE format(
            'ALTER TABLE public.%I ADD CONSTRAINT %I FOREIGN KEY '
            '(instrument, granularity, event_creation_date, original_event_id) '
            'REFERENCES public.%I (instrument, granularity, event_creation_date, '
            'original_event_id) ON DELETE CASCADE', lv, lv || '_event_fkey', ev);
        -- the ids, registered in one statement, in key order (the registry's index is
        -- then written page after page: 8% faster than in the leaf's order for 400k ids)
        BEGIN
            EXECUTE format('INSERT INTO event_id_registry SELECT original_event_id, '
                           'instrument, granularity, event_creation_date FROM public.%I '
                           'ORDER BY original_event_id', ev);
        EXCEPTION WHEN unique_violation THEN
            EXECUTE format('SELECT registry_raise_conflict(ARRAY(SELECT (original_event_id, '
                           'instrument, granularity, event_creation_date)::event_id_registry '
                           'FROM public.%I))', ev);
        END;
        PERFORM registry_add_triggers(format('public.%I', ev)::regclass, ARRAY[p.i, p.g]);
        -- Statistics of the partition key: without them the planner takes (instrument,
        -- granularity), a constant in a leaf, for selective, and the levels' foreign-key
        -- check probes the (instrument, granularity) index, reading the whole leaf for every
        -- level row (measured: 5 ms a row on a 6,000-row leaf).
        EXECUTE format('ANALYZE public.%I (instrument, granularity)', ev);
    END LOOP;
    -- attach: SHARE UPDATE EXCLUSIVE on each granularity parent until commit, taken in the
    -- order (table, granularity) every attaching or partition-creating transaction uses
    FOREACH t IN ARRAY ARRAY['new_resistance_events', 'support_and_resistance_master',
                             'event_features'] LOOP
        FOR gran IN SELECT x FROM unnest(ARRAY['W', 'D', 'H4', 'H1']) WITH ORDINALITY u(x, n)
                    WHERE x = ANY(p_granularities) ORDER BY n LOOP
            FOR p IN SELECT DISTINCT i FROM unnest(p_instruments, p_granularities) AS x(i, gg)
                     WHERE gg = gran ORDER BY i LOOP
                EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I '
                               'FOR VALUES IN (%L)', t || '_' || lower(gran),
                               t || '_' || lower(gran) || '_' || lower(p.i), p.i);
            END LOOP;
        END LOOP;
    END LOOP;
END
$$;

