"""Settings shared by every environment, read from the environment with django-environ.

Unset variables fall back to embedded defaults so that one command starts the app on a bare
machine: SQLite in `var/db.sqlite3` and kombu's filesystem transport in `var/broker/` (a real
asynchronous broker that a worker process consumes, not eager mode).

Over our ~400-line norm: one commented line per setting, grouped by subject, is what an operator
reads; split across files, the defaults would be harder to find.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Lets Django classes be subscripted in annotations at runtime (ModelAdmin[Patient], QuerySet[...]).
django_stubs_ext.monkeypatch()

ROOT_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = ROOT_DIR / "var"

env = environ.Env()
if (ROOT_DIR / ".env").is_file():
    environ.Env.read_env(str(ROOT_DIR / ".env"))


def _path_from_env(name: str, default: Path) -> Path:
    """A path setting: relative values are taken relative to the repository root, not the cwd."""
    raw = env.str(name, default="")
    path = Path(raw).expanduser() if raw else default
    if not path.is_absolute():
        path = ROOT_DIR / path
    return path.resolve()


# --- Core -----------------------------------------------------------------------------------------
SECRET_KEY: str = env.str(
    "SECRET_KEY", default="django-insecure-papreview-development-key-change-me-in-production"
)
DEBUG: bool = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "whitenoise.runserver_nostatic",
    "papreview.accounts.admin_config.PapReviewAdminConfig",
    # Before django.contrib.auth: its createsuperuser checks the password rules with --noinput too.
    "papreview.accounts",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally, never from a CDN
    "django_otp",  # two-factor sign-in (papreview.accounts.two_factor)
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",  # recovery codes
    "papreview.core",
    "papreview.cases",
    "papreview.analysis",
    "papreview.review",
    "papreview.datasets",
    "papreview.registry",
    "papreview.uploads",
    "papreview.imaging",
    "papreview.workflow",
    "papreview.web",
    "papreview.audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # CSP (no inline script), Permissions-Policy, no-store on API answers
    "papreview.core.headers.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): second factor given
    # The request being served, for the address (and user) of audit events.
    "papreview.audit.context.AuditRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Every HTML page needs a logged-in user unless marked @login_not_required (login, healthz).
    # DRF views opt out and answer 401/403 themselves.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # A signed-in account without a role sees no page but signing out (403 otherwise).
    "papreview.accounts.middleware.RoleRequiredMiddleware",
    # Admins and pathologists (TWO_FACTOR_REQUIRED_ROLES) set up two-factor before anything else.
    "papreview.accounts.middleware.TwoFactorRequiredMiddleware",
]

ROOT_URLCONF = "papreview.urls"
WSGI_APPLICATION = "papreview.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [ROOT_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "papreview.accounts.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DEFAULT_SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES: dict[str, dict[str, Any]] = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DEFAULT_SQLITE_PATH}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Its folder is created when the apps are ready (papreview.core.apps), not on import.
    # Several uploads at once: WAL lets readers go on beside the one writer, a transaction takes
    # the write lock when it begins (IMMEDIATE: no "database is locked" when a reading
    # transaction would upgrade to a write), and a writer waits up to 20 s for its turn.
    _sqlite = DATABASES["default"].setdefault("OPTIONS", {})
    _sqlite.setdefault("timeout", 20)
    _sqlite.setdefault("transaction_mode", "IMMEDIATE")
    _sqlite.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # Bounded connections (README "Database connections"): with DB_POOL_MAX_SIZE > 0 each process
    # keeps a psycopg pool of at most that many connections (Django's "pool" option; connections
    # are then returned to the pool, not kept per thread, so CONN_MAX_AGE must be 0). A process
    # waits up to DB_POOL_TIMEOUT_S for a free one. Server total <= processes x DB_POOL_MAX_SIZE.
    DB_POOL_MAX_SIZE: int = env.int("DB_POOL_MAX_SIZE", default=0)
    if DB_POOL_MAX_SIZE > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": min(env.int("DB_POOL_MIN_SIZE", default=1), DB_POOL_MAX_SIZE),
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": env.float("DB_POOL_TIMEOUT_S", default=30.0),
            "max_idle": 300.0,
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Refuses logins of a locked username or address (see papreview.accounts.lockout).
AUTHENTICATION_BACKENDS = ["papreview.accounts.lockout.LockoutModelBackend"]
# Lockout (papreview.accounts.lockout): a username with this many failed logins from one address
# within LOGIN_LOCKOUT_SECONDS, or LOGIN_LOCKOUT_USERNAME_FAILURES from anywhere, is locked for
# LOGIN_LOCKOUT_SECONDS after its last failure. An address is never locked (a proxy or a NAT would
# lock everyone behind it): after LOGIN_SLOWDOWN_ADDRESS_FAILURES failures each try waits 1 s,
# doubling per failure, at most LOGIN_SLOWDOWN_MAX_S.
LOGIN_LOCKOUT_FAILURES: int = env.int("LOGIN_LOCKOUT_FAILURES", default=5)
LOGIN_LOCKOUT_USERNAME_FAILURES: int = env.int("LOGIN_LOCKOUT_USERNAME_FAILURES", default=20)
LOGIN_SLOWDOWN_ADDRESS_FAILURES: int = env.int("LOGIN_SLOWDOWN_ADDRESS_FAILURES", default=10)
LOGIN_SLOWDOWN_MAX_S: int = env.int("LOGIN_SLOWDOWN_MAX_S", default=60)
LOGIN_LOCKOUT_SECONDS: int = env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60)
# Reverse proxies whose X-Forwarded-For is believed for the client address (audit, lockout).
AUDIT_TRUSTED_PROXIES: list[str] = env.list("AUDIT_TRUSTED_PROXIES", default=[])
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Two-factor sign-in (TOTP apps, recovery codes): required for these roles; anyone may enrol.
TWO_FACTOR_REQUIRED_ROLES: list[str] = env.list(
    "TWO_FACTOR_REQUIRED_ROLES", default=["admin", "pathologist"]
)
OTP_TOTP_ISSUER: str = env.str("OTP_TOTP_ISSUER", default="PapReview")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # no secret or QR code of anyone's device in the admin
# Invitation links (set your password) and password-reset links: one use, then expired after this.
ACCOUNT_INVITE_TTL_S: int = env.int("ACCOUNT_INVITE_TTL_S", default=3 * 24 * 3600)
PASSWORD_RESET_TIMEOUT: int = env.int("PASSWORD_RESET_TTL_S", default=24 * 3600)
# The address in links sent by email; empty: taken from the administrator's request.
PAPREVIEW_BASE_URL: str = env.str("PAPREVIEW_BASE_URL", default="")

# --- Email ----------------------------------------------------------------------------------------
# EMAIL_URL: smtp://user:password@host:25, smtp+tls://...:587, smtp+ssl://...:465. Unset: the
# console backend (messages are printed by the web process, not sent; `runstack` says so).
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND: str = _email["EMAIL_BACKEND"]
EMAIL_HOST: str = _email.get("EMAIL_HOST", "localhost") or "localhost"
EMAIL_PORT: int = int(_email.get("EMAIL_PORT") or 25)
EMAIL_HOST_USER: str = _email.get("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD: str = _email.get("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS: bool = bool(_email.get("EMAIL_USE_TLS", False))
EMAIL_USE_SSL: bool = bool(_email.get("EMAIL_USE_SSL", False))
EMAIL_TIMEOUT: int = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="PapReview <papreview@localhost>")

# --- Single sign-on (OpenID Connect, mozilla-django-oidc; papreview.accounts.oidc) ----------------
# On when OIDC_RP_CLIENT_ID is set. Endpoints from the provider's discovery document.
OIDC_RP_CLIENT_ID: str = env.str("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET: str = env.str("OIDC_RP_CLIENT_SECRET", default="")
OIDC_RP_SIGN_ALGO: str = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES: str = env.str("OIDC_RP_SCOPES", default="openid email profile")
OIDC_OP_AUTHORIZATION_ENDPOINT: str = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT: str = env.str("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT: str = env.str("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT: str = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_PROVIDER_NAME: str = env.str("OIDC_PROVIDER_NAME", default="your organisation")
OIDC_USE_PKCE = True  # S256 code challenge, on top of state and nonce
# The claim that lists the user's groups or roles, and how its values map to our roles
# ("idp-value=role,..."; a value that is a role's own name maps to it). Roles are set at each
# sign-on from the claim; no mapped value: no role.
OIDC_ROLES_CLAIM: str = env.str("OIDC_ROLES_CLAIM", default="roles")
OIDC_ROLE_MAP: dict[str, str] = env.dict("OIDC_ROLE_MAP", default={})
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
if OIDC_RP_CLIENT_ID:
    AUTHENTICATION_BACKENDS = [
        *AUTHENTICATION_BACKENDS,
        "papreview.accounts.oidc.RoleClaimOIDCBackend",
    ]

# --- Internationalisation -------------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = _path_from_env("STATIC_ROOT", VAR_DIR / "static")
STATICFILES_DIRS: list[Any] = [ROOT_DIR / "static"] if (ROOT_DIR / "static").is_dir() else []
# Browser libraries installed from npm (package-lock.json) and served as static files, never a CDN.
NPM_STATIC: dict[str, Path] = {
    "vendor/openseadragon": ROOT_DIR / "node_modules" / "openseadragon" / "build" / "openseadragon",
}
STATICFILES_DIRS += [(prefix, path) for prefix, path in NPM_STATIC.items() if path.is_dir()]
MEDIA_URL = "/media/"
MEDIA_ROOT = _path_from_env("MEDIA_ROOT", VAR_DIR / "media")

STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# S3-compatible media storage (shared by web and workers on several machines) when a bucket is set.
AWS_STORAGE_BUCKET_NAME: str = env.str("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage"}
    AWS_S3_ENDPOINT_URL: str | None = env.str("AWS_S3_ENDPOINT_URL", default=None)
    AWS_S3_REGION_NAME: str | None = env.str("AWS_S3_REGION_NAME", default=None)
    AWS_DEFAULT_ACL = None
    AWS_QUERYSTRING_AUTH = True
    AWS_S3_FILE_OVERWRITE = False
    # Uploads above 16 MiB go up in 16 MiB parts (S3 multipart), a few at a time, streamed from
    # the file being saved: no second local copy, no part held in memory beyond its buffer.
    from boto3.s3.transfer import TransferConfig

    AWS_S3_TRANSFER_CONFIG = TransferConfig(
        multipart_threshold=16 * 1024**2, multipart_chunksize=16 * 1024**2, max_concurrency=4
    )
# Files read from object storage are cached on each host's local disk on first use (tiles, crops,
# analysis, exports, weights read local files), least recently used out beyond the size limit.
# The health page shows staff its figures (hit rate); see README "Several machines".
MEDIA_CACHE_DIR = _path_from_env("MEDIA_CACHE_DIR", VAR_DIR / "media-cache")
MEDIA_CACHE_MAX_BYTES: int = env.int("MEDIA_CACHE_MAX_BYTES", default=50 * 1024**3)
# The review page's whole cell layers (papreview.workflow.selectors.slide_cell_columns), shared by
# a host's web processes: one file per slide while its cells are unchanged, this many at most.
CELL_LAYER_CACHE_DIR = _path_from_env("CELL_LAYER_CACHE_DIR", VAR_DIR / "cell-layers")
CELL_LAYER_CACHE_FILES: int = env.int("CELL_LAYER_CACHE_FILES", default=32)
# Serve static files from the app directories without collectstatic (development and `make run`).
WHITENOISE_USE_FINDERS = True
FILE_UPLOAD_TEMP_DIR: str | None = env.str("FILE_UPLOAD_TEMP_DIR", default=None)
# Slides are large: let uploads through Django's size guards; SLIDE_MAX_PIXELS bounds decoding.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Resumable chunked uploads (papreview.uploads): partial files live here until the last chunk.
UPLOAD_TEMP_DIR = _path_from_env("UPLOAD_TEMP_DIR", VAR_DIR / "uploads")
UPLOAD_MAX_BYTES: int = env.int("UPLOAD_MAX_BYTES", default=20 * 1024**3)
UPLOAD_CHUNK_MAX_BYTES: int = env.int("UPLOAD_CHUNK_MAX_BYTES", default=32 * 1024**2)
# Beat removes uploads with no chunk for UPLOAD_EXPIRE_AFTER_H hours (uploads_expire), this often.
UPLOAD_EXPIRE_AFTER_H: float = env.float("UPLOAD_EXPIRE_AFTER_H", default=48.0)
UPLOAD_EXPIRE_INTERVAL_S: float = env.float("UPLOAD_EXPIRE_INTERVAL_S", default=3600.0)

# --- PapReview ------------------------------------------------------------------------------------
PAPREVIEW_DATA_DIR = _path_from_env("PAPREVIEW_DATA_DIR", ROOT_DIR.parent / "shared" / "data")
INFERENCE_DEVICE: str = env.str("INFERENCE_DEVICE", default="auto")
# bfloat16 on the CPU for workers, registry evaluations and retraining alike (inference's
# resolve_cpu_bf16): auto = where the CPU has AVX512-BF16/AMX, as the CLI's default.
INFERENCE_CPU_BF16: str = env.str("INFERENCE_CPU_BF16", default="auto")
if INFERENCE_CPU_BF16 not in ("auto", "on", "off"):
    raise ImproperlyConfigured(f"INFERENCE_CPU_BF16 is auto, on or off, not {INFERENCE_CPU_BF16!r}")
# Most pixels a field image may declare (decompression-bomb guard for uploads).
SLIDE_MAX_PIXELS: int = env.int("SLIDE_MAX_PIXELS", default=100_000_000)

# --- Celery ---------------------------------------------------------------------------------------
# Redis (or any kombu URL) when CELERY_BROKER_URL is set; otherwise kombu's filesystem transport in
# var/broker/, consumed by the worker that `manage.py runstack` starts.
BROKER_DIR = _path_from_env("PAPREVIEW_BROKER_DIR", VAR_DIR / "broker")
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="") or "filesystem://"
CELERY_BROKER_IS_FILESYSTEM = CELERY_BROKER_URL.startswith("filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
if CELERY_BROKER_IS_FILESYSTEM:
    # Its folders are created when the apps are ready (papreview.core.apps), not on import.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    # One local worker needs no remote control (ping, inspect), which would poll more folders.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        # A job not acknowledged within this time is handed to another worker (late ack: a job
        # is acknowledged when it ends). Must exceed ANALYSIS_TIME_LIMIT_S (below), or a long
        # slide would be started a second time while the first execution still runs.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3 * 3600),
        # How often workers look for jobs of dead workers past the visibility timeout.
        "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
        "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
    }
CELERY_RESULT_BACKEND: str | None = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Analysis jobs go to the `inference` queue (GPU workers), retraining to `training` (long jobs,
# a GPU worker of its own in production); everything else to `celery`.
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {
    "papreview.analysis.tasks.*": {"queue": "inference"},
    "papreview.registry.tasks.retrain_job_run": {"queue": "training"},
    # The sweeper must not wait behind long slide jobs.
    "papreview.analysis.tasks.analysis_sweep": {"queue": "celery"},
}
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(
    _path_from_env("CELERY_BEAT_SCHEDULE_FILENAME", VAR_DIR / "celerybeat-schedule")
)
# Celery's file-backed scheduler that creates the schedule's folder before opening it.
CELERY_BEAT_SCHEDULER = "papreview.celery:BeatScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE

# --- Analysis (the `inference` queue) -------------------------------------------------------------
# GPU workers: one process per GPU (`--concurrency 1`, one worker per GPU with
# CUDA_VISIBLE_DEVICES), prefetch multiplier 1 (set above): a slide job holds the GPU's memory and
# runs for minutes, so a worker never reserves a second job that another worker could start now.
# Default weights: used (registered as ModelVersions and activated) while no version is active.
ANALYSIS_DEFAULT_DETECTOR = _path_from_env(
    "ANALYSIS_DEFAULT_DETECTOR", ROOT_DIR / "inference" / "weights" / "detector.pt"
)
ANALYSIS_DEFAULT_CLASSIFIER = _path_from_env(
    "ANALYSIS_DEFAULT_CLASSIFIER", ROOT_DIR / "inference" / "weights" / "classifier.pt"
)
# Local copies of weights kept in remote (S3) media storage: the media cache (MEDIA_CACHE_DIR).
INFERENCE_TORCH_THREADS: int = env.int("INFERENCE_TORCH_THREADS", default=0)  # 0: torch decides
ANALYSIS_WARM_UP: bool = env.bool("ANALYSIS_WARM_UP", default=True)  # load models at process start
ANALYSIS_BATCH_SIZE: int = env.int("ANALYSIS_BATCH_SIZE", default=8)  # detector tiles per pass
ANALYSIS_TILE_SIZE: int = env.int("ANALYSIS_TILE_SIZE", default=1024)  # detector tile side, px
# Batches of tiles read ahead by a background thread while the models work (0: no read-ahead).
# One is enough to hide the reads (a tile reads in a fraction of its detector time; glass tiles
# are not read at all), and each batch ahead holds 8 tiles of 3 MB and their read buffers.
ANALYSIS_PREFETCH_BATCHES: int = env.int("ANALYSIS_PREFETCH_BATCHES", default=1)
# Progress (tiles done / total) is written at most this often; each write is also a heartbeat.
ANALYSIS_PROGRESS_INTERVAL_S: float = env.float("ANALYSIS_PROGRESS_INTERVAL_S", default=1.0)
# Time limits, sized for the largest slide in production: a 40x whole-slide image of about
# 100,000 x 80,000 px is ~2,000 detector tiles after background skipping; a CPU worker needs up to
# about an hour for it, a GPU worker minutes. Soft limit: the run fails with a clear reason; hard
# limit: the process is killed. Both stay below CELERY_VISIBILITY_TIMEOUT (3 h).
ANALYSIS_SOFT_TIME_LIMIT_S: int = env.int("ANALYSIS_SOFT_TIME_LIMIT_S", default=2 * 3600 - 300)
ANALYSIS_TIME_LIMIT_S: int = env.int("ANALYSIS_TIME_LIMIT_S", default=2 * 3600)
# Transient errors (database or broker connection): retries with exponential backoff and jitter.
ANALYSIS_MAX_RETRIES: int = env.int("ANALYSIS_MAX_RETRIES", default=5)
ANALYSIS_RETRY_BACKOFF_S: float = env.float("ANALYSIS_RETRY_BACKOFF_S", default=5.0)
ANALYSIS_RETRY_BACKOFF_MAX_S: float = env.float("ANALYSIS_RETRY_BACKOFF_MAX_S", default=300.0)
# A delivery whose slide is locked by another execution waits this long for the lock before it
# steps aside (a dead worker's lock is freed by PostgreSQL a moment after the process died).
ANALYSIS_LOCK_WAIT_S: float = env.float("ANALYSIS_LOCK_WAIT_S", default=5.0)

# Review: a predicted abnormal cell at least this confident is "flagged"; a slide cannot be signed
# out less severe than an undecided flagged cell (papreview.review.selectors.flagged_cells).
REVIEW_FLAG_THRESHOLD: float = env.float("REVIEW_FLAG_THRESHOLD", default=0.5)
PAPREVIEW_TEST_HOOKS: bool = env.bool("PAPREVIEW_TEST_HOOKS", default=False)
# A run is failed once it was started this many times without finishing (poison slide).
ANALYSIS_MAX_ATTEMPTS: int = env.int("ANALYSIS_MAX_ATTEMPTS", default=3)
# The sweeper (celery beat): sends jobs that never reached the broker after the grace period, and
# re-sends (or fails) runs without a heartbeat for ANALYSIS_STALE_AFTER_S whose worker is dead.
ANALYSIS_SWEEP_INTERVAL_S: float = env.float("ANALYSIS_SWEEP_INTERVAL_S", default=60.0)
ANALYSIS_PUBLISH_GRACE_S: int = env.int("ANALYSIS_PUBLISH_GRACE_S", default=30)
# A running analysis beats `heartbeat_at` every ANALYSIS_HEARTBEAT_INTERVAL_S from a thread, so a
# run whose worker was killed is re-sent ANALYSIS_STALE_AFTER_S after its last beat (2 minutes).
ANALYSIS_HEARTBEAT_INTERVAL_S: float = env.float("ANALYSIS_HEARTBEAT_INTERVAL_S", default=30.0)
ANALYSIS_STALE_AFTER_S: int = env.int("ANALYSIS_STALE_AFTER_S", default=120)
# Queued runs published this long ago and never started are sent again (messages lost in a broker
# restart); a duplicate is harmless (a run executes once), so this only bounds the wait.
ANALYSIS_REQUEUE_AFTER_S: int = env.int("ANALYSIS_REQUEUE_AFTER_S", default=5 * 60)
# --- Retraining (the `training` queue): extra `python -m inference train-*` arguments per stage,
# e.g. {"detector": ["--max-minutes", "60"], "classifier": ["--max-minutes", "30"]}.
RETRAIN_TRAINING_ARGS: dict[str, list[str]] = {}
# Retrain on the export PLUS the base data the shipped models learnt from (CRIC, found under
# PAPREVIEW_DATA_DIR on the trainer): both stages train with `--merge-base`, and the fusion is
# fitted on both validation parts. Needed when the lab's export alone cannot teach every class
# (a lab that signs out mostly NILM); off by default (the base data may not be on the trainer).
RETRAIN_MERGE_BASE: bool = env.bool("RETRAIN_MERGE_BASE", default=False)

# --- Dataset exports (the `celery` queue) ---------------------------------------------------------
# Exports are built slide by slide in a temporary folder here (local disk, room for one export),
# then zipped and renamed into media `exports/`.
DATASET_EXPORT_TMP_DIR = _path_from_env("DATASET_EXPORT_TMP_DIR", VAR_DIR / "export-tmp")
# Below the Redis visibility timeout (3 h) with the hard limit (+5 min) included.
DATASET_EXPORT_SOFT_TIME_LIMIT_S: int = env.int("DATASET_EXPORT_SOFT_TIME_LIMIT_S", default=10200)
# QC re-review: how often beat draws the admin-set share of newly signed-out slides.
QC_SAMPLE_INTERVAL_S: float = env.float("QC_SAMPLE_INTERVAL_S", default=3600.0)

CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "analysis-sweep": {
        "task": "papreview.analysis.tasks.analysis_sweep",
        "schedule": ANALYSIS_SWEEP_INTERVAL_S,
        "options": {"queue": "celery", "expires": ANALYSIS_SWEEP_INTERVAL_S},
    },
    "qc-sample": {
        "task": "papreview.datasets.tasks.qc_sample",
        "schedule": QC_SAMPLE_INTERVAL_S,
        "options": {"queue": "celery", "expires": QC_SAMPLE_INTERVAL_S},
    },
    "uploads-expire": {
        "task": "papreview.uploads.tasks.uploads_expire",
        "schedule": UPLOAD_EXPIRE_INTERVAL_S,
        "options": {"queue": "celery", "expires": UPLOAD_EXPIRE_INTERVAL_S},
    },
}

# --- REST API -------------------------------------------------------------------------------------
# API tokens expire this long after they were issued (a new one from POST /api/auth/token/); they
# are revoked at once on a password change, a deactivation or a role taken away.
API_TOKEN_TTL_S: int = env.int("API_TOKEN_TTL_S", default=12 * 3600)
REST_FRAMEWORK: dict[str, Any] = {
    # Token first: an anonymous API request gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "papreview.accounts.tokens.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "papreview.accounts.permissions.HasRole",
        "papreview.accounts.permissions.ReadOnlyForViewers",
    ],
    "DEFAULT_PAGINATION_CLASS": "papreview.core.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "papreview.core.exceptions.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Multipart bodies with hostile file names (path, not UTF-8) are refused with a 400.
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "papreview.core.parsers.StrictMultiPartParser",
    ],
    # Only the token endpoint is throttled (per client IP): it is the one that takes passwords.
    "DEFAULT_THROTTLE_RATES": {"anon": env.str("API_TOKEN_THROTTLE", default="30/min")},
}

SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "PapReview API",
    "DESCRIPTION": "Cervical cytology screening: patients, slides, cell review and sign-out.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # PATCH bodies are documented as their serializers require them (a cell edit needs the
    # version it read), not with every field made optional.
    "COMPONENT_SPLIT_PATCH": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "papreview.core.schema.document_refusals_and_bodies",
    ],
    "ENUM_NAME_OVERRIDES": {
        "BethesdaEnum": "papreview.core.choices.BETHESDA_CHOICES",
        "SlideStatusEnum": "papreview.cases.models.SlideStatus",
        "ReviewStatusEnum": "papreview.review.models.ReviewStatus",
    },
}

# --- Logging --------------------------------------------------------------------------------------
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}
