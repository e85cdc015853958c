#!/usr/bin/env bash
# One image, several roles: web (migrate then gunicorn), worker (inference queue), beat (sweeper).
set -euo pipefail
role="${1:-web}"
case "$role" in
  web)
    # The owner role migrates and (re)grants the runtime role; the app itself then runs as that
    # runtime role (DATABASE_URL), which may only INSERT into the audit table (SECURITY.md).
    if [ -n "${OWNER_DATABASE_URL:-}" ]; then
      DATABASE_URL="$OWNER_DATABASE_URL" python manage.py migrate --noinput
      DATABASE_URL="$OWNER_DATABASE_URL" python manage.py db_runtime_role \
        --role "${APP_DB_ROLE:-papreview_app}" --password-env APP_DB_PASSWORD
    else
      python manage.py migrate --noinput
    fi
    # WEB_WORKER_CLASS=gthread (WEB_THREADS per worker) keeps connections alive: a viewer's
    # hundreds of tiles then reuse them (README, "Tile serving"); sync closes each one.
    exec gunicorn papreview.wsgi:application --bind 0.0.0.0:8000 \
      --workers "${WEB_CONCURRENCY:-3}" --worker-class "${WEB_WORKER_CLASS:-sync}" \
      --threads "${WEB_THREADS:-1}" --keep-alive 5 --timeout 120 --access-logfile -
    ;;
  worker)
    # One process per GPU and no prefetching: a slide job is long and holds the model's memory.
    exec celery -A papreview worker -Q "${WORKER_QUEUES:-inference,celery}" \
      --concurrency "${WORKER_CONCURRENCY:-1}" --prefetch-multiplier 1 \
      --hostname "worker-%h-${WORKER_NAME:-$RANDOM}" --loglevel INFO
    ;;
  beat)
    exec celery -A papreview beat --loglevel INFO --schedule /app/var/celerybeat-schedule
    ;;
  *)
    exec "$@"
    ;;
esac
