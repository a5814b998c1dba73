-- 0002 core tables: S/R events, S/R levels, event features and the loader's quarantine.
--
-- Partitioning: LIST (granularity) with four fixed children made here, each LIST (instrument)
-- with leaves made at run time by ensure_partition() (0003). Leaf names read
-- <table>_<granularity>_<instrument>, e.g. new_resistance_events_h1_eur_usd.
--
-- PostgreSQL requires a unique key on a partitioned table to contain every partitioning column,
-- so the seed's PRIMARY KEY (original_event_id) becomes
-- (instrument, granularity, event_creation_date, original_event_id): time comes before the
-- random UUID so the key index fills in time order (append-mostly) and doubles as the
-- "latest events of a pair" index, and a later time sub-partitioning needs no key change.
-- docs/schema.md lists every deviation from the seed and why.

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Seed columns first, in the seed's order, with the seed's types, defaults, NOT NULLs and CHECKs.
CREATE TABLE new_resistance_events (
    original_event_id UUID NOT NULL DEFAULT gen_random_uuid(),
    event_type VARCHAR(20) NOT NULL DEFAULT 'new_resistance',
    event_creation_date TIMESTAMP WITH TIME ZONE NOT NULL,
    granularity VARCHAR(2) NOT NULL CHECK (granularity IN ('W','D','H4','H1')),
    instrument VARCHAR(10) NOT NULL,
    event_price_level DECIMAL(18,6) NOT NULL CHECK (event_price_level > 0),
    atr_at_event DECIMAL(18,6) NOT NULL CHECK (atr_at_event > 0),
    volume_at_event DECIMAL(18,2),
    new_resistance_negative_rebound DECIMAL(18,6) NOT NULL CHECK (new_resistance_negative_rebound <= 0),
    new_resistance_negative_rebound_in_atr DECIMAL(18,6) NOT NULL,
    day_of_week SMALLINT NOT NULL CHECK (day_of_week BETWEEN 0 AND 6),
    hour_of_day SMALLINT NOT NULL CHECK (hour_of_day BETWEEN 0 AND 23),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT new_resistance_events_pkey
        PRIMARY KEY (instrument, granularity, event_creation_date, original_event_id)
) PARTITION BY LIST (granularity);

-- The seed's three indexes, on the parent so every partition gets them.
CREATE INDEX idx_events_instrument_granularity
    ON new_resistance_events(instrument, granularity);
CREATE INDEX idx_events_creation_date
    ON new_resistance_events(event_creation_date DESC);
CREATE INDEX idx_events_price_level
    ON new_resistance_events(event_price_level);

-- S/R levels. Seed columns first; instrument, granularity and event_creation_date are added
-- so the foreign key can reference the events' composite key. A level lives and dies with its
-- event: ON DELETE CASCADE, so retention on events never fails and never orphans a level.
--
-- The foreign key is declared per leaf, by ensure_partition(): each levels leaf references
-- the events leaf of the same (instrument, granularity), the only place its event can be.
-- The same integrity, 8x cheaper to write: an FK into the partitioned parent re-prunes every
-- partition for each row checked (measured: 105 us/row with 112 pairs, against 4 us/row for
-- the leaf FK; docs/schema.md). It also lets retention drop a pair's leaves outright.
CREATE TABLE support_and_resistance_master (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    original_event_id UUID NOT NULL,
    event_type VARCHAR(20) NOT NULL,
    last_test_date TIMESTAMP WITH TIME ZONE,
    test_count INTEGER DEFAULT 0,
    breach_date TIMESTAMP WITH TIME ZONE,
    status VARCHAR(20) DEFAULT 'active'
        CHECK (status IN ('active', 'breached', 'expired')),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    instrument VARCHAR(10) NOT NULL,
    granularity VARCHAR(2) NOT NULL,
    event_creation_date TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT support_and_resistance_master_pkey
        PRIMARY KEY (instrument, granularity, event_creation_date, id),
    -- one level per event; also the index the cascading delete from events looks rows up by
    CONSTRAINT support_and_resistance_master_event_key
        UNIQUE (instrument, granularity, event_creation_date, original_event_id)
) PARTITION BY LIST (granularity);

-- Features: one row per event, self-contained (no foreign key), kept 5 years while events are
-- kept 2. The columns are what a model trains on: the event's measures, normalised ones, and
-- its level's test/breach outcome as known when the row was computed.
CREATE TABLE event_features (
    original_event_id UUID NOT NULL,
    instrument VARCHAR(10) NOT NULL,
    granularity VARCHAR(2) NOT NULL CHECK (granularity IN ('W','D','H4','H1')),
    event_creation_date TIMESTAMP WITH TIME ZONE NOT NULL,
    event_type VARCHAR(20) NOT NULL,
    event_price_level DECIMAL(18,6) NOT NULL CHECK (event_price_level > 0),
    atr_at_event DECIMAL(18,6) NOT NULL CHECK (atr_at_event > 0),
    atr_pct_of_price DECIMAL(18,8) NOT NULL,
    volume_at_event DECIMAL(18,2),
    negative_rebound DECIMAL(18,6) NOT NULL CHECK (negative_rebound <= 0),
    negative_rebound_in_atr DECIMAL(18,6) NOT NULL,
    day_of_week SMALLINT NOT NULL CHECK (day_of_week BETWEEN 0 AND 6),
    hour_of_day SMALLINT NOT NULL CHECK (hour_of_day BETWEEN 0 AND 23),
    level_status VARCHAR(20) NOT NULL CHECK (level_status IN ('active', 'breached', 'expired')),
    level_test_count INTEGER NOT NULL CHECK (level_test_count >= 0),
    level_last_test_date TIMESTAMP WITH TIME ZONE,
    level_breach_date TIMESTAMP WITH TIME ZONE,
    hours_to_breach DECIMAL(12,2),
    feature_version SMALLINT NOT NULL DEFAULT 1,
    computed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT event_features_pkey
        PRIMARY KEY (instrument, granularity, event_creation_date, original_event_id)
) PARTITION BY LIST (granularity);

-- retention (5 years) and training-window scans across instruments
CREATE INDEX idx_features_creation_date ON event_features(event_creation_date);

-- The four granularity children of each table; instrument leaves come from ensure_partition().
DO $$
DECLARE
    t text;
    g text;
BEGIN
    FOREACH t IN ARRAY ARRAY['new_resistance_events', 'support_and_resistance_master',
                             'event_features'] LOOP
        FOREACH g IN ARRAY ARRAY['W', 'D', 'H4', 'H1'] LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (%L) '
                           'PARTITION BY LIST (instrument)', t || '_' || lower(g), t, g);
            -- NULL guards: PostgreSQL routes a row before it checks NOT NULL, so a NULL key
            -- would fail as "no partition found" (23514). These partitions accept only NULL
            -- keys, which their NOT NULL then rejects with the right error (23502). They can
            -- never hold a row. '__null' cannot collide: instruments never start with '_'.
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (NULL)',
                           t || '_' || lower(g) || '__null', t || '_' || lower(g));
        END LOOP;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (NULL)',
                       t || '__null', t);
        EXECUTE format('CREATE TRIGGER trg_%s_updated_at BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION set_updated_at()', t, t);
    END LOOP;
END
$$;

-- Quarantine for rows the loader refuses: where they came from, what they were, and why.
CREATE TABLE rejected_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL CHECK (source_sha256 ~ '^[0-9a-f]{64}$'),
    line_number INTEGER NOT NULL CHECK (line_number >= 1),
    raw_record JSONB NOT NULL,
    reasons TEXT[] NOT NULL CHECK (cardinality(reasons) > 0),
    rejected_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    -- reloading a file quarantines its bad lines once
    CONSTRAINT rejected_events_source_line_key UNIQUE (source_sha256, line_number)
);
CREATE INDEX idx_rejected_events_rejected_at ON rejected_events(rejected_at);
CREATE TRIGGER trg_rejected_events_updated_at BEFORE UPDATE ON rejected_events
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE new_resistance_events IS
    'Detected new-resistance events; partitioned by granularity, then instrument. Kept 2 years.';
COMMENT ON TABLE support_and_resistance_master IS
    'S/R levels, one per event; deleted with their event (FK ON DELETE CASCADE).';
COMMENT ON TABLE event_features IS
    'Per-event model features; self-contained (no FK), kept 5 years.';
COMMENT ON TABLE rejected_events IS 'Rows the loader quarantined, with every reason.';
