-- The database roles of a deployment (docker-compose.yml and deploy/k8s apply this file):
--   the schema's owner  migrates (`headway db upgrade`) and applies this file, nothing else;
--   headway_worker      the workers: every ledger table, but the audit trail is append-only
--                       (insert and read audit_records and audit_captures, never change or
--                       delete them; the trigger refusing UPDATE stays on, as only the owner
--                       may switch it off) and the schema's version is read-only;
--   headway_pruner      `headway ledger prune` on a schedule (the workers run with
--                       HEADWAY_PRUNE_S=0): moves and deletes what is past retention, audit
--                       records and captures included (HEADWAY_RETAIN_AUDIT_D /
--                       HEADWAY_RETAIN_AUDIT_CAPTURES_D), never updates the trail.
-- Apply as the schema's owner (a role with CREATEROLE) after every `headway db upgrade`, then
-- set the roles' passwords from the environment with role-passwords.sql:
--   psql -v ON_ERROR_STOP=1 -f deploy/postgres/audit-grants.sql -f deploy/postgres/role-passwords.sql
-- Idempotent: run it again after each release's migrations.
DO $$ BEGIN
    CREATE ROLE headway_worker LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;  -- created already (by an earlier run, or a DBA)
END $$;
DO $$ BEGIN
    CREATE ROLE headway_pruner LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO headway_worker, headway_pruner;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO headway_worker, headway_pruner;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO headway_worker, headway_pruner;
-- tables a later migration adds are the workers' too, until this file runs again
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO headway_worker, headway_pruner;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO headway_worker, headway_pruner;
-- the audit trail: appended and read by the workers, deleted past retention by the pruner
REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_captures FROM headway_worker;
REVOKE UPDATE, TRUNCATE ON audit_records, audit_captures FROM headway_pruner;
-- the schema's version is the migrations'
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM headway_worker, headway_pruner;
-- PostgreSQL 17+: the pruner may rebuild the indexes of the tables a pass empties (REINDEX);
-- before 17 only the owner may, and the pruner skips it (an index shrinks as it is reused)
DO $$ BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE 'GRANT MAINTAIN ON jobs, usage_events TO headway_pruner';
    END IF;
END $$;
