-- 0006 down: back to 0005's row triggers (the registry itself is unchanged and exact) and
-- 0003's ensure_partition(); the load-then-attach functions go.
DROP FUNCTION attach_staged_partitions(text[], text[]);
DROP FUNCTION stage_partitions(text[], text[]);

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT t.tgname, t.tgrelid::regclass AS tbl FROM pg_trigger t
             JOIN pg_proc f ON f.oid = t.tgfoid
             WHERE f.proname IN ('registry_stmt_insert', 'registry_stmt_delete',
                                 'registry_stmt_update', 'registry_stmt_truncate')
               AND f.pronamespace = 'public'::regnamespace LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tbl);
    END LOOP;
END
$$;
DROP FUNCTION registry_add_triggers(regclass, text[]);
DROP FUNCTION registry_stmt_truncate();
DROP FUNCTION registry_stmt_update();
DROP FUNCTION registry_stmt_delete();
DROP FUNCTION registry_stmt_insert();
DROP FUNCTION registry_raise_conflict(event_id_registry[]);

-- 0005's row triggers, cloned to every leaf by PostgreSQL
CREATE TRIGGER trg_events_registry_insert AFTER INSERT ON new_resistance_events
    FOR EACH ROW EXECUTE FUNCTION registry_on_insert();
CREATE TRIGGER trg_events_registry_delete AFTER DELETE ON new_resistance_events
    FOR EACH ROW EXECUTE FUNCTION registry_on_delete();
CREATE TRIGGER trg_events_registry_update
    AFTER UPDATE OF original_event_id, instrument, granularity, event_creation_date
    ON new_resistance_events
    FOR EACH ROW EXECUTE FUNCTION registry_on_update();

-- 0003's ensure_partition()
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
