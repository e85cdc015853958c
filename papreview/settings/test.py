"""Settings for pytest: the real PostgreSQL and Redis of the CI machine unless the env says else."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/papreview")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

from .base import *  # noqa: F403
from .base import VAR_DIR, env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-test-key-not-for-production-use-000")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests point MEDIA_ROOT at a temporary folder per test (tests/conftest.py); this is the fallback.
MEDIA_ROOT = VAR_DIR / "test-media"
CELL_LAYER_CACHE_DIR = VAR_DIR / "test-cell-layers"
WHITENOISE_AUTOREFRESH = True
PAPREVIEW_TEST_HOOKS = True  # the browser tests read the review page's state (window.__review)
# Two-factor is required of no role here, so the other tests sign in with a password alone; the
# two-factor tests (tests/accounts/) turn the default (admin, pathologist) back on.
TWO_FACTOR_REQUIRED_ROLES = []
