#!/usr/bin/env bash
# One image, several roles: web (migrate then gunicorn), worker (inference queue), beat (sweeper).
set -euo pipefail
role="${1:-web}"
case "$role" in
  web)
    python manage.py migrate --noinput
    exec gunicorn papreview.wsgi:application --bind 0.0.0.0:8000 \
      --workers "${WEB_CONCURRENCY:-3}" --timeout 120 --access-logfile -
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
