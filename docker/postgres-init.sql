-- Runs once, when the postgres service initialises an empty data volume (as POSTGRES_USER, in
-- POSTGRES_DB, which holds the mlops application tables). MLflow keeps its tracking and registry
-- tables in a database of its own, `mlflow`, on the same server: create it here. The application
-- schema itself is created by `mlops db init` (run by the cron container at start-up, and by any
-- mlops command on first use). \gexec makes this a no-op when the database already exists.
SELECT 'CREATE DATABASE mlflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
