-- The registry database's two roles (deploy/README.md, "Database roles").
--
--   assay_owner    owns the schema: the tables, the event log's append-only triggers and their
--                  functions. Only migrations connect as it.
--   assay_service  what every process of the deployment connects as (CLI, registry server,
--                  sensors, run workers): reads and writes rows, and may only read and append
--                  to the event log. It owns nothing, so it cannot disable, drop or replace the
--                  triggers (ALTER TABLE ... DISABLE TRIGGER and DROP TRIGGER need the table's
--                  owner), create tables, or become the owner.
--
-- Run it as a superuser (or the database's owner with CREATEROLE), connected to the registry's
-- database, before the first migration and again after every migration (it grants on the
-- tables that exist). It is idempotent. Set the roles' passwords separately:
--   ALTER ROLE assay_owner PASSWORD '...'; ALTER ROLE assay_service PASSWORD '...';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'assay_owner') THEN
        CREATE ROLE assay_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'assay_service') THEN
        CREATE ROLE assay_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
    -- The service must not be able to SET ROLE to the owner.
    IF pg_has_role('assay_service', 'assay_owner', 'MEMBER') THEN
        REVOKE assay_owner FROM assay_service;
    END IF;
END
$$;

-- Only the owner creates objects in the schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO assay_owner;
GRANT USAGE ON SCHEMA public TO assay_service;

-- Rows of the tables the owner's migrations create, now and later.
ALTER DEFAULT PRIVILEGES FOR ROLE assay_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO assay_service;
ALTER DEFAULT PRIVILEGES FOR ROLE assay_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO assay_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO assay_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO assay_service;

-- The event log: read and append only (its triggers refuse the rest as well); the schema's
-- version: read only (the service finds it at the newest migration and changes nothing).
DO $$
BEGIN
    IF to_regclass('public.events') IS NOT NULL THEN
        REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON public.events FROM assay_service;
    END IF;
    IF to_regclass('public.alembic_version') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.alembic_version FROM assay_service;
    END IF;
END
$$;
