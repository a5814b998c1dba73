-- 0001 roles: who may do what.
--   sr_owner  owns every object the migrations create and runs the DDL (migrations connect as
--             it, or SET ROLE to it)
--   sr_writer inserts, updates, deletes and calls ensure_partition (loads log in as a member)
--   sr_reader selects only
-- Roles are cluster-wide, so they are created only when missing (another database on the same
-- server may already use them). Creating roles is cluster administration: on the local cluster
-- it is done before any migration, which then runs as sr_owner itself and finds them; on an
-- external server an administrator (CREATEROLE) runs this step, or creates them beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sr_owner') THEN
        CREATE ROLE sr_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sr_reader') THEN
        CREATE ROLE sr_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sr_writer') THEN
        CREATE ROLE sr_writer NOLOGIN;
    END IF;
END
$$;

DO $$
BEGIN
    -- the writer reads too
    IF NOT pg_has_role('sr_writer', 'sr_reader', 'MEMBER') THEN
        GRANT sr_reader TO sr_writer;
    END IF;
    -- the migrating user must be able to SET ROLE sr_owner (a no-op when it is sr_owner or a
    -- superuser); an administrator also gets the other two, so one URL can serve everything
    -- on a server where separate login roles are not set up (weaker: see core/db.py)
    IF NOT pg_has_role(current_user, 'sr_owner', 'MEMBER') THEN
        GRANT sr_owner TO CURRENT_USER;
    END IF;
    IF current_user <> 'sr_owner' AND NOT pg_has_role(current_user, 'sr_writer', 'MEMBER') THEN
        BEGIN
            GRANT sr_writer, sr_reader TO CURRENT_USER;
        EXCEPTION WHEN insufficient_privilege THEN
            -- a separate owner login (a plain member of sr_owner): it needs neither
            RAISE NOTICE '% is not made a member of sr_writer and sr_reader', current_user;
        END;
    END IF;
END
$$;

GRANT USAGE, CREATE ON SCHEMA public TO sr_owner;
GRANT USAGE ON SCHEMA public TO sr_reader, sr_writer;

-- objects sr_owner creates later (tables, leaf partitions made at run time) get these grants
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO sr_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    GRANT INSERT, UPDATE, DELETE ON TABLES TO sr_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO sr_writer;
-- functions are not executable by PUBLIC unless granted one by one
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
