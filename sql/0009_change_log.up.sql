-- 0009 change log: every committed change of events (and of level outcomes) is a row of
-- change_log with a gap-free, increasing seq, and a pg_notify on sr_events / sr_levels
-- (docs/realtime.md). Notifications are the wake-up; the log is the truth.
--
-- How. Statement-level AFTER triggers with transition tables (one set-based query per
-- statement, never a call per row) group the statement's rows by (instrument, granularity)
-- into change_pending: one row per (transaction, channel, op, pair), so the statements of one
-- transaction (a load's COPY per chunk and pair) coalesce into one change per pair. An
-- AFTER INSERT constraint trigger on change_pending, DEFERRABLE INITIALLY DEFERRED, fires at
-- COMMIT: it moves the pending row to change_log under the next seq of the one-row counter
-- change_seq and calls pg_notify. A rolled-back transaction (or savepoint) leaves no pending
-- row, consumes no seq and notifies nothing (NOTIFY is sent only on commit anyway).
--
-- Why a counter row and not a sequence: a sequence hands out numbers that rolled-back
-- transactions lose (gaps) and that commit out of order (a reader of seq > N could skip a
-- row that commits later with a smaller seq). The counter is updated under its row lock at
-- commit time, so seq order is commit order and a reader of "seq > last" never misses a row.
-- The cost: transactions that change events serialise from their pre-commit trigger until
-- their commit has been flushed (one WAL flush each: no group commit among them). Their work
-- before COMMIT runs in parallel as before. A REPEATABLE READ or SERIALIZABLE writer that
-- commits concurrently with another can get a serialisation failure on the counter (retry).
--
-- Where the triggers are. Statement triggers fire only on the table a statement names, so
-- (like the id registry of 0006) they go on the root, the four granularity children and every
-- leaf of the events and of the levels; ensure_partition() and attach_staged_partitions() add
-- them to new leaves. A staged leaf (0006's load-then-attach) is filled before it has
-- triggers: attach_staged_partitions() announces its rows itself. TRUNCATE is announced as a
-- delete by a BEFORE TRUNCATE trigger on each events leaf (TRUNCATE of a parent fires those
-- of every leaf it empties). Dropping or detaching a leaf fires nothing: delete its rows
-- first (retention deletes rows, batch by batch, and never drops leaves).
--
-- load_id: the load_log row a load writes last in its transaction sets the transaction-local
-- setting sr.load_id (trigger on load_log), read at commit. Any writer may set it too:
-- SELECT set_config('sr.load_id', '42', true).

CREATE TABLE change_log (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    channel TEXT NOT NULL CHECK (channel IN ('events', 'levels')),
    op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    instrument VARCHAR(10) NOT NULL,
    granularity VARCHAR(2) NOT NULL,
    rows BIGINT NOT NULL CHECK (rows > 0),
    first TIMESTAMP WITH TIME ZONE NOT NULL,
    last TIMESTAMP WITH TIME ZONE NOT NULL,
    load_id BIGINT,  -- no foreign key: load_log is pruned on its own schedule
    breached INTEGER,  -- levels: levels that became breached
    tested INTEGER,  -- levels: levels whose test_count rose
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_change_log_created_at ON change_log (created_at);
COMMENT ON TABLE change_log IS
    'One row per committed change of events or level outcomes per (transaction, pair); '
    'seq is gap-free in commit order (sql/0009, docs/realtime.md).';

-- the counter: one row, updated under its row lock at commit
CREATE TABLE change_seq (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq BIGINT NOT NULL
);
INSERT INTO change_seq VALUES (true, 0);

-- a transaction's changes until its commit (never visible to another; unlogged: nothing of it
-- outlives its transaction, so it needs no WAL)
CREATE UNLOGGED TABLE change_pending (
    xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
    channel TEXT NOT NULL,
    op TEXT NOT NULL,
    instrument VARCHAR(10) NOT NULL,
    granularity VARCHAR(2) NOT NULL,
    rows BIGINT NOT NULL,
    first TIMESTAMP WITH TIME ZONE NOT NULL,
    last TIMESTAMP WITH TIME ZONE NOT NULL,
    breached INTEGER,
    tested INTEGER,
    PRIMARY KEY (xid, channel, op, instrument, granularity)
);

-- written by the triggers only; subscribers (the reader) read the log and the newest seq,
-- retention (the writer) deletes old log rows
REVOKE ALL ON change_pending FROM sr_writer, sr_reader;
REVOKE INSERT, UPDATE, DELETE ON change_seq FROM sr_writer;
REVOKE INSERT, UPDATE ON change_log FROM sr_writer;
GRANT SELECT ON change_log, change_seq TO sr_reader;

-- the NOTIFY payload: the log row as JSON, times in ISO 8601 UTC (about 200 bytes; the
-- limit is 8,000)
CREATE FUNCTION change_payload(c change_log) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT json_strip_nulls(json_build_object(
        'seq', c.seq, 'op', c.op, 'instrument', c.instrument, 'granularity', c.granularity,
        'rows', c.rows,
        'first', (to_json(c.first AT TIME ZONE 'UTC') #>> '{}') || 'Z',
        'last', (to_json(c.last AT TIME ZONE 'UTC') #>> '{}') || 'Z',
        'load_id', c.load_id, 'breached', c.breached, 'tested', c.tested))::text
$$;

-- at COMMIT (deferred): the pending change gets the next seq, goes to the log, is notified
CREATE FUNCTION changes_publish() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    p change_pending%ROWTYPE;
    c change_log%ROWTYPE;
    load_id text := current_setting('sr.load_id', true);
BEGIN
    DELETE FROM change_pending
    WHERE xid = NEW.xid AND channel = NEW.channel AND op = NEW.op
      AND instrument = NEW.instrument AND granularity = NEW.granularity
    RETURNING * INTO p;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE change_seq SET seq = seq + 1 RETURNING seq INTO c.seq;
    INSERT INTO change_log (seq, channel, op, instrument, granularity, rows, first, last,
                            load_id, breached, tested)
    VALUES (c.seq, p.channel, p.op, p.instrument, p.granularity, p.rows, p.first, p.last,
            CASE WHEN load_id ~ '^[0-9]{1,18}$' THEN load_id::bigint END,
            p.breached, p.tested)
    RETURNING * INTO c;
    PERFORM pg_notify('sr_' || c.channel, change_payload(c));
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER trg_change_pending_publish AFTER INSERT ON change_pending
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION changes_publish();

-- events inserted (or updated: TG_ARGV[0]) by a statement, per pair
CREATE FUNCTION changes_events_new() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO change_pending AS p (channel, op, instrument, granularity, rows, first, last)
    SELECT 'events', TG_ARGV[0], instrument, granularity, count(*), min(event_creation_date),
           max(event_creation_date)
    FROM new_rows GROUP BY instrument, granularity ORDER BY instrument, granularity
    ON CONFLICT (xid, channel, op, instrument, granularity) DO UPDATE
    SET rows = p.rows + excluded.rows, first = least(p.first, excluded.first),
        last = greatest(p.last, excluded.last);
    RETURN NULL;
END
$$;

CREATE FUNCTION changes_events_old() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO change_pending AS p (channel, op, instrument, granularity, rows, first, last)
    SELECT 'events', 'delete', instrument, granularity, count(*), min(event_creation_date),
           max(event_creation_date)
    FROM old_rows GROUP BY instrument, granularity ORDER BY instrument, granularity
    ON CONFLICT (xid, channel, op, instrument, granularity) DO UPDATE
    SET rows = p.rows + excluded.rows, first = least(p.first, excluded.first),
        last = greatest(p.last, excluded.last);
    RETURN NULL;
END
$$;

-- the rows an events table holds, as one change per pair (op 'insert': a staged leaf being
-- attached; 'delete': a leaf about to be truncated)
CREATE FUNCTION changes_pend_table(p_table regclass, p_op text) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO change_pending AS p (channel, op, instrument, granularity, rows, first, '
        'last) SELECT %L, %L, instrument, granularity, count(*), min(event_creation_date), '
        'max(event_creation_date) FROM %s GROUP BY instrument, granularity '
        'ORDER BY instrument, granularity '
        'ON CONFLICT (xid, channel, op, instrument, granularity) DO UPDATE '
        'SET rows = p.rows + excluded.rows, first = least(p.first, excluded.first), '
        'last = greatest(p.last, excluded.last)', 'events', p_op, p_table);
END
$$;
REVOKE EXECUTE ON FUNCTION changes_pend_table(regclass, text) FROM PUBLIC;

CREATE FUNCTION changes_events_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    PERFORM changes_pend_table(TG_RELID::regclass, 'delete');
    RETURN NULL;
END
$$;

-- level outcomes a statement changed, per pair: rows changed, newly breached, newly tested
CREATE FUNCTION changes_levels_update() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO change_pending AS p (channel, op, instrument, granularity, rows, first, last,
                                     breached, tested)
    SELECT 'levels', 'update', n.instrument, n.granularity, count(*),
           min(n.event_creation_date), max(n.event_creation_date),
           count(*) FILTER (WHERE n.status = 'breached'
                            AND o.status IS DISTINCT FROM 'breached'),
           count(*) FILTER (WHERE n.test_count > coalesce(o.test_count, 0))
    FROM new_rows n
    JOIN old_rows o ON (o.instrument, o.granularity, o.event_creation_date, o.id)
                       = (n.instrument, n.granularity, n.event_creation_date, n.id)
    WHERE (n.status, n.test_count, n.last_test_date, n.breach_date)
          IS DISTINCT FROM (o.status, o.test_count, o.last_test_date, o.breach_date)
    GROUP BY n.instrument, n.granularity ORDER BY n.instrument, n.granularity
    ON CONFLICT (xid, channel, op, instrument, granularity) DO UPDATE
    SET rows = p.rows + excluded.rows, first = least(p.first, excluded.first),
        last = greatest(p.last, excluded.last), breached = p.breached + excluded.breached,
        tested = p.tested + excluded.tested;
    RETURN NULL;
END
$$;

-- the load a transaction's changes belong to (no SET clause: a function with one would undo
-- this transaction-local setting on return)
CREATE FUNCTION changes_note_load() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.set_config('sr.load_id', NEW.id::text, true);
    RETURN NULL;
END
$$;
CREATE TRIGGER trg_load_log_changes AFTER INSERT ON load_log
    FOR EACH ROW EXECUTE FUNCTION changes_note_load();

-- the change-log triggers of one events or levels table (a leaf also gets the events'
-- TRUNCATE trigger: a parent's TRUNCATE fires its leaves')
CREATE FUNCTION changes_add_triggers(p_table regclass, p_channel text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF p_channel = 'events' THEN
        EXECUTE format('CREATE TRIGGER trg_changes_insert AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION changes_events_new(''insert'')', p_table);
        EXECUTE format('CREATE TRIGGER trg_changes_update AFTER UPDATE ON %s '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION changes_events_new(''update'')', p_table);
        EXECUTE format('CREATE TRIGGER trg_changes_delete AFTER DELETE ON %s '
                       'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION changes_events_old()', p_table);
        IF (SELECT relkind FROM pg_class WHERE oid = p_table) = 'r' THEN
            EXECUTE format('CREATE TRIGGER trg_changes_truncate BEFORE TRUNCATE ON %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION changes_events_truncate()',
                           p_table);
        END IF;
    ELSIF p_channel = 'levels' THEN
        EXECUTE format('CREATE TRIGGER trg_changes_update AFTER UPDATE ON %s '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION changes_levels_update()', p_table);
    ELSE
        RAISE EXCEPTION 'unknown change channel %', p_channel;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION changes_add_triggers(regclass, text) FROM PUBLIC;

-- every events and levels table there is (not the NULL guards: they never hold a row)
SELECT changes_add_triggers(c.oid::regclass, CASE WHEN c.relname LIKE 'new\_resistance\_events%'
                                                  THEN 'events' ELSE 'levels' END)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND (c.relname IN ('new_resistance_events', 'support_and_resistance_master')
       OR c.oid IN (SELECT inhrelid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                    WHERE p.relname ~ '^(new_resistance_events|support_and_resistance_master)'
                                      '(_[a-z0-9]+)?$'))
  AND NOT c.relname LIKE '%\_\_null'
ORDER BY c.relname;

-- ensure_partition(): as 0006, plus the change-log triggers of the new events and levels leaves
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
                PERFORM changes_add_triggers(format('public.%I', leaf)::regclass, 'events');
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
            IF t = 'support_and_resistance_master' THEN
                PERFORM changes_add_triggers(format('public.%I', leaf)::regclass, 'levels');
            END IF;
            -- statistics from the start: unanalysed leaves get seq-scan plans for FK checks
            EXECUTE format('ANALYZE public.%I', leaf);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- attach_staged_partitions(): as 0007, plus the staged rows announced and the change-log
-- triggers of the new events and levels leaves
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
        -- its rows, loaded before it had triggers, announced as one insert; then the
        -- change-log triggers of both leaves
        PERFORM changes_pend_table(format('public.%I', ev)::regclass, 'insert');
        PERFORM changes_add_triggers(format('public.%I', ev)::regclass, 'events');
        PERFORM changes_add_triggers(format('public.%I', lv)::regclass, 'levels');
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
