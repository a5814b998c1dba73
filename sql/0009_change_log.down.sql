-- 0009 down: ensure_partition() as 0006 made it, attach_staged_partitions() as 0007 made it;
-- the change-log triggers, functions and tables go (the log is history only: no guard).

CREATE OR REPLACE FUNCTION ensure_partition(p_instrument text, p_granularity text)
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

    PERFORM pg_advisory_xact_lock(7004002, hashtext(p_instrument || '/' || p_granularity));
    PERFORM pg_advisory_xact_lock(hashtext('sr_platform.ensure_partition'));

    -- events before levels: the levels leaf references the events leaf
    FOREACH t IN ARRAY ARRAY['new_resistance_events', 'support_and_resistance_master',
                             'event_features'] LOOP
        parent := t || '_' || lower(p_granularity);
        leaf := parent || '_' || lower(p_instrument);
        IF to_regclass(format('public.%I', leaf)) IS NULL THEN
            EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES IN (%L)',
                           leaf, parent, p_instrument);
            IF t = 'new_resistance_events' THEN
                PERFORM registry_add_triggers(format('public.%I', leaf)::regclass,
                                              ARRAY[p_instrument, p_granularity]);
            END IF;
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

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT t.tgname, t.tgrelid::regclass AS tbl FROM pg_trigger t
             JOIN pg_proc f ON f.oid = t.tgfoid
             WHERE f.proname IN ('changes_events_new', 'changes_events_old',
                                 'changes_events_truncate', 'changes_levels_update')
               AND f.pronamespace = 'public'::regnamespace AND NOT t.tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tbl);
    END LOOP;
END
$$;
DROP TRIGGER trg_load_log_changes ON load_log;
DROP FUNCTION changes_add_triggers(regclass, text);
DROP FUNCTION changes_note_load();
DROP FUNCTION changes_levels_update();
DROP FUNCTION changes_events_truncate();
DROP FUNCTION changes_pend_table(regclass, text);
DROP FUNCTION changes_events_old();
DROP FUNCTION changes_events_new();
DROP TABLE change_pending;
DROP FUNCTION changes_publish();
DROP FUNCTION change_payload(change_log);
DROP TABLE change_seq;
DROP TABLE change_log;
