-- 0001 down: remove the grants and default privileges; drop the roles unless another database
-- on this server still uses them (roles are cluster-wide) or we may not (a non-admin owner).
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    REVOKE USAGE, SELECT ON SEQUENCES FROM sr_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    REVOKE INSERT, UPDATE, DELETE ON TABLES FROM sr_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE sr_owner IN SCHEMA public
    REVOKE SELECT ON TABLES FROM sr_reader;

REVOKE USAGE ON SCHEMA public FROM sr_reader, sr_writer;
REVOKE USAGE, CREATE ON SCHEMA public FROM sr_owner;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['sr_writer', 'sr_reader', 'sr_owner'] LOOP
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', r);
        EXCEPTION
            WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'role % kept: other databases on this server still use it', r;
            WHEN insufficient_privilege OR object_in_use THEN
                -- migrating as sr_owner: roles are the administrator's to drop
                RAISE NOTICE 'role % kept: dropping roles is cluster administration', r;
        END;
    END LOOP;
END
$$;
