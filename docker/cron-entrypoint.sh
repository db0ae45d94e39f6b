#!/bin/sh
# Entrypoint of the cron image (Dockerfile.cron).
#
# 1. Render the crontab from crontab.template with WEEKLY_SCHEDULE / DAILY_SCHEDULE / CRON_TZ:
#    a malformed schedule stops the container here, with a message naming the variable.
# 2. Apply the database migrations, retrying while PostgreSQL is not reachable yet.
# 3. Hand over to supercronic (PID 1: it forwards SIGTERM and waits for running jobs, so compose's
#    stop_grace_period must be longer than the longest job).
#
# With arguments, steps 1-2 still run and the arguments are run instead of supercronic, e.g.
#   docker compose run --rm cron mlops pipeline weekly --as-of 2025-01-06
set -eu

CRONTAB_FILE="${CRONTAB_FILE:-/tmp/crontab}"
DB_INIT_ATTEMPTS="${DB_INIT_ATTEMPTS:-30}"
DB_INIT_DELAY="${DB_INIT_DELAY:-2}"

mlops crontab render --out "$CRONTAB_FILE"

attempt=1
until mlops db init; do
    if [ "$attempt" -ge "$DB_INIT_ATTEMPTS" ]; then
        echo "cron-entrypoint: database still unavailable after $attempt attempts, giving up" >&2
        exit 1
    fi
    echo "cron-entrypoint: database not ready (attempt $attempt/$DB_INIT_ATTEMPTS), retrying in ${DB_INIT_DELAY}s" >&2
    attempt=$((attempt + 1))
    sleep "$DB_INIT_DELAY"
done

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

# Fail fast on a crontab supercronic would not accept, then run it.
supercronic -test "$CRONTAB_FILE"
exec supercronic -json -prometheus-listen-address 0.0.0.0:9746 "$CRONTAB_FILE"
