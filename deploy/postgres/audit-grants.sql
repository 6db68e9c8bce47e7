-- The audit trail append-only by privilege too (issue 24 §4), beside the trigger that refuses
-- UPDATE: the workers' role may append to audit_records and audit_captures and read them, not
-- change or delete them; a separate pruning role deletes what is past HEADWAY_RETAIN_AUDIT_D /
-- HEADWAY_RETAIN_AUDIT_CAPTURES_D. Run the workers with HEADWAY_PRUNE_S=0 and
-- `headway ledger prune` as headway_pruner on a schedule (a CronJob).
-- Apply as the schema's owner after `headway db upgrade`: psql -f deploy/postgres/audit-grants.sql
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'headway_worker') THEN
        CREATE ROLE headway_worker LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'headway_pruner') THEN
        CREATE ROLE headway_pruner LOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA public TO headway_worker, headway_pruner;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO headway_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO headway_worker;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_captures FROM headway_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO headway_pruner;
REVOKE UPDATE, TRUNCATE ON audit_records, audit_captures FROM headway_pruner;
