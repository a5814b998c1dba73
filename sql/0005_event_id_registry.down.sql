-- 0005 down: the registry is derived from new_resistance_events (the up step rebuilds it), so
-- it is dropped without a guard.
DROP TRIGGER trg_events_registry_truncate ON new_resistance_events;
DROP TRIGGER trg_events_registry_update ON new_resistance_events;
DROP TRIGGER trg_events_registry_delete ON new_resistance_events;
DROP TRIGGER trg_events_registry_insert ON new_resistance_events;
DROP FUNCTION registry_on_truncate();
DROP FUNCTION registry_on_update();
DROP FUNCTION registry_on_delete();
DROP FUNCTION registry_on_insert();
DROP FUNCTION registry_claim(uuid, text, text, timestamptz);
DROP TABLE event_id_registry;
