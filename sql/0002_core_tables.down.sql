-- 0002 down: drops the tables and everything in them. Refused while they hold rows unless the
-- session says so (`sr-platform db downgrade REV --allow-data-loss` sets the flag below):
-- take a backup first (see README, "Rollback").
DO $$
BEGIN
    IF coalesce(current_setting('sr_platform.allow_data_loss', true), '') <> 'on'
       AND (EXISTS (SELECT FROM new_resistance_events)
            OR EXISTS (SELECT FROM event_features)
            OR EXISTS (SELECT FROM rejected_events)) THEN
        RAISE EXCEPTION 'refusing to drop tables that hold data'
            USING ERRCODE = 'object_in_use',
                  HINT = 'back up first, then rerun with --allow-data-loss';
    END IF;
END
$$;

DROP TABLE rejected_events;
DROP TABLE event_features;
DROP TABLE support_and_resistance_master;
DROP TABLE new_resistance_events;
DROP FUNCTION set_updated_at();
