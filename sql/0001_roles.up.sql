-- 0001 roles: who may do what.
--   sr_owner  owns every object the migrations create and runs the DDL (migrations SET ROLE to it)
--   sr_writer inserts, updates, deletes and calls ensure_partition (loads run as this role)
--   sr_reader selects only
-- Roles are cluster-wide, so they are created only when missing (another database on the same
-- server may already use them).
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

-- the writer reads too
GRANT sr_reader TO sr_writer;
-- the migrating (connecting) user must be able to SET ROLE to each of them
GRANT sr_owner, sr_writer, sr_reader TO CURRENT_USER;

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
