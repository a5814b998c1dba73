-- 0007 down: attach_staged_partitions() as 0006 made it (random level ids from the column's
-- default, the registry written in the leaf's order); level_id() goes. Level rows already
-- written keep their ids.

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
        -- this load's), written here rather than sent and parsed a second time
        EXECUTE format('INSERT INTO public.%I (original_event_id, event_type, instrument, '
                       'granularity, event_creation_date) SELECT original_event_id, '
                       'event_type, instrument, granularity, event_creation_date '
                       'FROM public.%I', lv, ev);
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
        -- the ids, registered in one statement
        BEGIN
            EXECUTE format('INSERT INTO event_id_registry SELECT original_event_id, '
                           'instrument, granularity, event_creation_date FROM public.%I', ev);
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

DROP FUNCTION level_id(uuid);
