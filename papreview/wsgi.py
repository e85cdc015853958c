"""WSGI entry point (gunicorn papreview.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")

application = get_wsgi_application()
