-- 0006 fast loads: the id registry kept by STATEMENT-level triggers (set-based, with
-- transition tables) instead of 0005's row triggers, and load-then-attach for new partitions.
--
-- Registry. 0005's row trigger cost ~10 us a loaded row (a plpgsql call per row). A
-- statement trigger sees the statement's rows as a transition table and registers them in
-- one INSERT (an id already registered raises unique_violation naming the id and its owner,
-- as registry_claim does). Statement triggers fire only on the table a statement names,
-- never on the partitions a row is routed to, so every table a statement can name gets them:
-- the root, the four granularity children and every events leaf (ensure_partition() and
-- attach_staged_partitions() add them to new leaves; registry_add_triggers() is the one
-- definition). The NULL-guard partitions can never hold a row and get none.
--
-- Load-then-attach. stage_partitions() creates, inside the loader's transaction, the three
-- leaves of a new (instrument, granularity) as standalone tables under their final names,
-- with the parent's columns, defaults and CHECKs, plus a CHECK equal to the partition bound
-- (so ATTACH PARTITION skips its validation scan) and no index, trigger or foreign key. The
-- loader COPYs (FREEZE) the events into them, then attach_staged_partitions() writes the
-- level rows from the events, builds the indexes, adds the levels foreign key (one
-- validating query), registers the ids in one INSERT, adds the registry triggers, ANALYZEs
-- the events' key columns and attaches the three tables. ATTACH takes SHARE UPDATE EXCLUSIVE on each
-- granularity parent until commit: the parents are locked in one fixed order (table, then
-- granularity; the order ensure_partition() locks them in) so concurrent loaders never
-- deadlock. Both functions take the loader's per-pair advisory lock (LOAD_LOCK 7004002), and
-- so does ensure_partition() now, so a concurrent ensure_partition() of the same pair waits
-- for the load to commit and then finds the leaves made. A failure before commit leaves
-- nothing: the tables are the transaction's own.

-- the registry rows of `rows` that cannot be registered: raises unique_violation naming the
-- first such id and its owner (another stored event, or an earlier row of the same statement)
CREATE FUNCTION registry_raise_conflict(p_rows event_id_registry[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    r record;
BEGIN
    SELECT n.* INTO r FROM unnest(p_rows) n
    JOIN event_id_registry e USING (original_event_id)
    ORDER BY n.original_event_id LIMIT 1;
    IF FOUND THEN
        PERFORM registry_claim(r.original_event_id, r.instrument, r.granularity,
                               r.event_creation_date);
    END IF;
    -- no stored owner: the statement itself writes one id twice (under two keys)
    FOR r IN SELECT * FROM (
                 SELECT n.*, count(*) OVER (PARTITION BY n.original_event_id) AS uses,
                        row_number() OVER (PARTITION BY n.original_event_id
                                           ORDER BY n.instrument, n.granularity,
                                                    n.event_creation_date) AS k
                 FROM unnest(p_rows) n) d
             WHERE uses > 1 ORDER BY original_event_id, k LOOP
        PERFORM registry_claim(r.original_event_id, r.instrument, r.granularity,
                               r.event_creation_date);  -- the second of an id raises
    END LOOP;
    RAISE EXCEPTION 'event_id_registry: conflict not found (registry out of step?)'
        USING ERRCODE = 'unique_violation';
END
$$;
REVOKE EXECUTE ON FUNCTION registry_raise_conflict(event_id_registry[]) FROM PUBLIC;

CREATE FUNCTION registry_stmt_insert() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    BEGIN
        INSERT INTO event_id_registry
        SELECT original_event_id, instrument, granularity, event_creation_date FROM new_rows;
    EXCEPTION WHEN unique_violation THEN
        PERFORM registry_raise_conflict(ARRAY(
            SELECT (original_event_id, instrument, granularity, event_creation_date)
                   ::event_id_registry FROM new_rows));
    END;
    RETURN NULL;
END
$$;

CREATE FUNCTION registry_stmt_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    DELETE FROM event_id_registry r USING old_rows o
    WHERE r.original_event_id = o.original_event_id;
    RETURN NULL;
END
$$;

-- rows whose (id, key) changed: the old pairs leave, the new ones are claimed (a row moving
-- to another partition through the parent is one UPDATE of the parent: it is seen here)
CREATE FUNCTION registry_stmt_update() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    DELETE FROM event_id_registry r
    USING (SELECT original_event_id, instrument, granularity, event_creation_date
           FROM old_rows
           EXCEPT ALL
           SELECT original_event_id, instrument, granularity, event_creation_date
           FROM new_rows) o
    WHERE (r.original_event_id, r.instrument, r.granularity, r.event_creation_date)
          = (o.original_event_id, o.instrument, o.granularity, o.event_creation_date);
    BEGIN
        INSERT INTO event_id_registry
        SELECT original_event_id, instrument, granularity, event_creation_date FROM new_rows
        EXCEPT ALL
        SELECT original_event_id, instrument, granularity, event_creation_date FROM old_rows;
    EXCEPTION WHEN unique_violation THEN
        PERFORM registry_raise_conflict(ARRAY(
            SELECT (original_event_id, instrument, granularity, event_creation_date)
                   ::event_id_registry
            FROM (SELECT original_event_id, instrument, granularity, event_creation_date
                  FROM new_rows
                  EXCEPT ALL
                  SELECT original_event_id, instrument, granularity, event_creation_date
                  FROM old_rows) n));
    END;
    RETURN NULL;
END
$$;

-- TRUNCATE of a granularity child (argument: granularity) or of a leaf (instrument,
-- granularity); the root keeps 0005's registry_on_truncate(). TRUNCATE of a parent fires the
-- TRUNCATE triggers of every partition it empties too.
CREATE FUNCTION registry_stmt_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_NARGS = 1 THEN
        DELETE FROM event_id_registry WHERE granularity = TG_ARGV[0];
    ELSE
        DELETE FROM event_id_registry
        WHERE instrument = TG_ARGV[0] AND granularity = TG_ARGV[1];
    END IF;
    RETURN NULL;
END
$$;

-- the registry's statement triggers on one events table (p_args: the TRUNCATE trigger's
-- arguments; NULL for the root, which keeps 0005's TRUNCATE trigger)
CREATE FUNCTION registry_add_triggers(p_table regclass, p_args text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER trg_registry_insert AFTER INSERT ON %s '
                   'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION registry_stmt_insert()', p_table);
    EXECUTE format('CREATE TRIGGER trg_registry_delete AFTER DELETE ON %s '
                   'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION registry_stmt_delete()', p_table);
    EXECUTE format('CREATE TRIGGER trg_registry_update AFTER UPDATE ON %s '
                   'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION registry_stmt_update()', p_table);
    IF p_args IS NOT NULL THEN
        EXECUTE format('CREATE TRIGGER trg_registry_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION registry_stmt_truncate(%s)',
                       p_table, (SELECT string_agg(quote_literal(a), ', ') FROM unnest(p_args) a));
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION registry_add_triggers(regclass, text[]) FROM PUBLIC;

-- the switch: 0005's row triggers (cloned on every leaf) go, the statement triggers come
DROP TRIGGER trg_events_registry_insert ON new_resistance_events;
DROP TRIGGER trg_events_registry_delete ON new_resistance_events;
DROP TRIGGER trg_events_registry_update ON new_resistance_events;
SELECT registry_add_triggers('public.new_resistance_events'::regclass, NULL);
SELECT registry_add_triggers(format('public.%I', 'new_resistance_events_' || lower(g))::regclass,
                             ARRAY[g])
FROM unnest(ARRAY['W', 'D', 'H4', 'H1']) g;
SELECT registry_add_triggers(format('public.%I', leaf.relname)::regclass,
                             ARRAY[(regexp_match(pg_get_expr(leaf.relpartbound, leaf.oid),
                                                 $re$IN \('(.*)'\)$re$))[1], g])
FROM unnest(ARRAY['W', 'D', 'H4', 'H1']) g
JOIN pg_inherits i ON i.inhparent = format('public.%I', 'new_resistance_events_' || lower(g))
                                        ::regclass
JOIN pg_class leaf ON leaf.oid = i.inhrelid
WHERE pg_get_expr(leaf.relpartbound, leaf.oid) <> 'FOR VALUES IN (NULL)';

-- ensure_partition: as 0003, plus the loader's per-pair lock (taken first: a load making the
-- same pair's leaves commits before this looks), and the registry triggers on the events leaf
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

-- stage_partitions(instruments, granularities): for each pair with no events leaf yet, its
-- three leaves as standalone tables (see the header); returns the pairs staged, as
-- 'INSTRUMENT/GRANULARITY'. Pairs whose leaves exist are left alone (the caller loads into
-- them). Call inside the load transaction; the per-pair locks are taken in sorted order.
CREATE FUNCTION stage_partitions(p_instruments text[], p_granularities text[])
RETURNS text[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    p record;
    t text;
    staged text[] := ARRAY[]::text[];
BEGIN
    FOR p IN SELECT DISTINCT i, g FROM unnest(p_instruments, p_granularities) AS x(i, g)
             ORDER BY i, g LOOP
        PERFORM check_partition_key(p.i, p.g);
        PERFORM pg_advisory_xact_lock(7004002, hashtext(p.i || '/' || p.g));
    END LOOP;
    FOR p IN SELECT DISTINCT i, g FROM unnest(p_instruments, p_granularities) AS x(i, g)
             ORDER BY i, g LOOP
        IF to_regclass(format('public.%I', 'new_resistance_events_' || lower(p.g) || '_'
                                           || lower(p.i))) IS NOT NULL THEN
            CONTINUE;
        END IF;
        FOREACH t IN ARRAY ARRAY['new_resistance_events', 'support_and_resistance_master',
                                 'event_features'] LOOP
            EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS '
                           'INCLUDING CONSTRAINTS, CONSTRAINT partition_bound CHECK '
                           '(instrument = %L AND granularity = %L))',
                           t || '_' || lower(p.g) || '_' || lower(p.i), t, p.i, p.g);
        END LOOP;
        staged := staged || (p.i || '/' || p.g);
    END LOOP;
    RETURN staged;
END
$$;

-- attach_staged_partitions(instruments, granularities): finishes and attaches what
-- stage_partitions() made for these pairs in this transaction (see the header). The caller
-- fills the events tables only: each event's level row (the defaults, status 'active') is
-- written here, from the events.
CREATE FUNCTION attach_staged_partitions(p_instruments text[], p_granularities text[])
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

REVOKE EXECUTE ON FUNCTION stage_partitions(text[], text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION attach_staged_partitions(text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stage_partitions(text[], text[]) TO sr_writer;
GRANT EXECUTE ON FUNCTION attach_staged_partitions(text[], text[]) TO sr_writer;
