-- 0005 event id registry: one id per event. The events' primary key has to carry the
-- partitioning columns, (instrument, granularity, event_creation_date, original_event_id), so
-- PostgreSQL alone would store an id twice under another pair or timestamp. The registry is
-- keyed by the id alone and kept by triggers on new_resistance_events, so every path that
-- writes events (the loader, direct SQL into the parent or a leaf, retention deletes, updates,
-- TRUNCATE of the parent) keeps it exact. Not partitioned: one btree on a uuid stays cheap to
-- probe at the sizes this table is kept at (2 years of events).

CREATE TABLE event_id_registry (
    original_event_id UUID PRIMARY KEY,
    instrument VARCHAR(10) NOT NULL,
    granularity VARCHAR(2) NOT NULL,
    event_creation_date TIMESTAMP WITH TIME ZONE NOT NULL
);
COMMENT ON TABLE event_id_registry IS
    'Every stored event id with its partition key; kept by triggers on new_resistance_events.';
-- written by the triggers only (SECURITY DEFINER); readable so the loader can check ids first
REVOKE INSERT, UPDATE, DELETE ON event_id_registry FROM sr_writer;

-- an id already stored twice cannot be registered: say which, rather than a bare key error
DO $$
DECLARE
    dup uuid;
    n bigint;
BEGIN
    SELECT min(original_event_id::text)::uuid, count(*) INTO dup, n FROM (
        SELECT original_event_id FROM new_resistance_events
        GROUP BY original_event_id HAVING count(*) > 1) d;
    IF n > 0 THEN
        RAISE EXCEPTION '% event ids are stored more than once (e.g. %): delete the extra rows, '
                        'then upgrade', n, dup USING ERRCODE = 'unique_violation';
    END IF;
END
$$;

INSERT INTO event_id_registry
SELECT original_event_id, instrument, granularity, event_creation_date
FROM new_resistance_events;

-- registry_claim: registers NEW's id or raises unique_violation naming the id and its owner
CREATE FUNCTION registry_claim(p_id uuid, p_instrument text, p_granularity text,
                               p_ts timestamptz)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    owner_row event_id_registry%ROWTYPE;
BEGIN
    INSERT INTO event_id_registry VALUES (p_id, p_instrument, p_granularity, p_ts)
    ON CONFLICT (original_event_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO owner_row FROM event_id_registry WHERE original_event_id = p_id;
        RAISE EXCEPTION 'original_event_id % is already used by % % %', p_id,
            owner_row.instrument, owner_row.granularity,
            to_char(owner_row.event_creation_date AT TIME ZONE 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'unique_violation', TABLE = 'event_id_registry',
                  CONSTRAINT = 'event_id_registry_pkey';
    END IF;
END
$$;

-- the hot path (every loaded row): the claim inlined, registry_claim() only on a conflict
CREATE FUNCTION registry_on_insert() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO event_id_registry VALUES (NEW.original_event_id, NEW.instrument,
                                          NEW.granularity, NEW.event_creation_date)
    ON CONFLICT (original_event_id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM registry_claim(NEW.original_event_id, NEW.instrument, NEW.granularity,
                               NEW.event_creation_date);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION registry_on_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    DELETE FROM event_id_registry WHERE original_event_id = OLD.original_event_id;
    RETURN NULL;
END
$$;

-- an update inside one leaf (a row moving to another leaf fires DELETE then INSERT instead)
CREATE FUNCTION registry_on_update() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF (NEW.original_event_id, NEW.instrument, NEW.granularity, NEW.event_creation_date)
       IS DISTINCT FROM
       (OLD.original_event_id, OLD.instrument, OLD.granularity, OLD.event_creation_date) THEN
        DELETE FROM event_id_registry WHERE original_event_id = OLD.original_event_id;
        PERFORM registry_claim(NEW.original_event_id, NEW.instrument, NEW.granularity,
                               NEW.event_creation_date);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION registry_on_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    TRUNCATE event_id_registry;
    RETURN NULL;
END
$$;

REVOKE EXECUTE ON FUNCTION registry_claim(uuid, text, text, timestamptz) FROM PUBLIC;

-- row triggers on the partitioned parent are cloned to every leaf, present and future, so a
-- direct insert into a leaf is covered too; TRUNCATE triggers are per table: the parent's
CREATE TRIGGER trg_events_registry_insert AFTER INSERT ON new_resistance_events
    FOR EACH ROW EXECUTE FUNCTION registry_on_insert();
CREATE TRIGGER trg_events_registry_delete AFTER DELETE ON new_resistance_events
    FOR EACH ROW EXECUTE FUNCTION registry_on_delete();
CREATE TRIGGER trg_events_registry_update
    AFTER UPDATE OF original_event_id, instrument, granularity, event_creation_date
    ON new_resistance_events
    FOR EACH ROW EXECUTE FUNCTION registry_on_update();
CREATE TRIGGER trg_events_registry_truncate AFTER TRUNCATE ON new_resistance_events
    FOR EACH STATEMENT EXECUTE FUNCTION registry_on_truncate();
