-- The passwords of the roles audit-grants.sql creates, from the environment (psql 15+), so
-- they come from your secret store and never from a file:
--   WORKER_DB_PASSWORD=… PRUNER_DB_PASSWORD=… \
--     psql -v ON_ERROR_STOP=1 -f audit-grants.sql -f role-passwords.sql
-- Run it as the schema's owner (a role with CREATEROLE), after audit-grants.sql.
\getenv worker_password WORKER_DB_PASSWORD
\getenv pruner_password PRUNER_DB_PASSWORD
\if :{?worker_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'WORKER_DB_PASSWORD is not set'; END $$;
\endif
\if :{?pruner_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'PRUNER_DB_PASSWORD is not set'; END $$;
\endif
ALTER ROLE headway_worker PASSWORD :'worker_password';
ALTER ROLE headway_pruner PASSWORD :'pruner_password';
