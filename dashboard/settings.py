"""CrossEdge dashboard settings, read from the environment.

Defaults give the embedded setup (SQLite, in-memory channel layer, state under var/).
Production: CROSSEDGE_DEBUG=0, CROSSEDGE_SECRET_KEY, CROSSEDGE_ALLOWED_HOSTS.
"""

import os
from datetime import timedelta
from pathlib import Path

from .env import database_from_url, envbool, envint, envlist, envsecret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CROSSEDGE_VAR_DIR", BASE_DIR / "var"))

DEBUG = envbool("CROSSEDGE_DEBUG", False)
SECRET_KEY = envsecret("CROSSEDGE_SECRET_KEY", VAR_DIR / "secret_key")
ALLOWED_HOSTS = envlist("CROSSEDGE_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "dashboard.fleet",
    "dashboard.policy",
    "dashboard.events",
    "dashboard.api",
    "dashboard.alerts",
    "dashboard.audit",
    "dashboard.traffic",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.audit.actor.ActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out login
]

# Failed logins are throttled (django-axes): after LOGIN_FAILURE_LIMIT failures for one user
# name from one address, that pair is locked out for LOGIN_LOCKOUT_MINUTES
# (`manage.py axes_reset` lifts it sooner).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("CROSSEDGE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("CROSSEDGE_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "crossedge.sqlite3",
        "OPTIONS": {
            # WAL lets the feeds read while ingest writes; IMMEDIATE avoids lock upgrades.
            # journal_size_limit: a checkpointed WAL is cut back to 8 MiB, not kept at its peak.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=8388608;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
        # Tests on a file as production runs (WAL, a busy timeout), not on SQLite's shared-cache
        # memory database, whose table locks fail at once where threads (alerts) write together.
        "TEST": {"NAME": str(VAR_DIR / "test-crossedge.sqlite3")},
    }
}

# At scale: DATABASE_URL selects PostgreSQL, REDIS_URL the Redis channel layer (so several
# daphne processes, and `manage.py` commands, reach every browser and agent).
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "capacity": 1000, "expiry": 30},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = os.environ.get("CROSSEDGE_STATIC_ROOT") or None  # set it to collectstatic for a proxy
WHITENOISE_USE_FINDERS = True  # serve static/ and the admin's files without a collectstatic step
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_SECURE = envbool("CROSSEDGE_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_AGE = envint("CROSSEDGE_SESSION_SECONDS", 12 * 3600)  # a working day; feeds close with it
# Behind TLS (directly or via a proxy that sets X-Forwarded-Proto): redirect to https, HSTS.
if envbool("CROSSEDGE_HTTPS", False):
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = envint("CROSSEDGE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("CROSSEDGE_HSTS_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("CROSSEDGE_HSTS_PRELOAD", False)
    SECURE_REDIRECT_EXEMPT = [r"^metrics$"]  # scrapers on the internal network

# Policy files: the importer refuses anything larger.
POLICY_MAX_BYTES = envint("CROSSEDGE_POLICY_MAX_BYTES", 1 << 20)
FEED_BACKFILL = envint("CROSSEDGE_FEED_BACKFILL", 50)
# A feed's catch-up also looks this far back for rows committed out of id order (several
# dashboard processes); an ingest commit slower than this is logged.
FEED_SETTLE = envint("CROSSEDGE_FEED_SETTLE", 30)
API_PAGE_SIZE = envint("CROSSEDGE_API_PAGE_SIZE", 100)
# Retention (dashboard/events/retention.py): raw events this many days (0: forever), then
# per-minute rollups of them this many days; pruned this many rows a transaction.
RETENTION_DAYS = envint("CROSSEDGE_RETENTION_DAYS", 7)
ROLLUP_DAYS = envint("CROSSEDGE_ROLLUP_DAYS", 400)
RETENTION_MB = envint("CROSSEDGE_RETENTION_MB", 0)  # a bound on the data's size; 0: none
PRUNE_BATCH = envint("CROSSEDGE_PRUNE_BATCH", 500)
PRUNE_DUTY = envint("CROSSEDGE_PRUNE_DUTY_PERCENT", 5) / 100  # of the time the pruner may work

# The audit trail (dashboard/audit) is kept AUDIT_DAYS (0: forever).
AUDIT_DAYS = envint("CROSSEDGE_AUDIT_DAYS", 400)

# Alert outputs (dashboard/alerts): a YAML file of outputs for headless deployments; a failed
# delivery is retried with backoff up to ALERT_RETRY_MAX seconds apart, for ALERT_GIVE_UP_HOURS.
ALERTS_FILE = os.environ.get("CROSSEDGE_ALERTS", "")
ALERT_RETRY_MAX = envint("CROSSEDGE_ALERT_RETRY_MAX", 15)
ALERT_GIVE_UP_HOURS = envint("CROSSEDGE_ALERT_GIVE_UP_HOURS", 24)
# Where staff reach the dashboard: the links alerts carry.
PUBLIC_URL = os.environ.get("CROSSEDGE_PUBLIC_URL", "http://127.0.0.1:8000")
# Email alerts go through Django's mail settings, from the environment.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "crossedge@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"crossedge": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# Where the agent finds Docker's container metadata (for names); the demo writes its own.
# /metrics: a bearer token, or scrapes from these networks (loopback by default).
# `make run` (manage.py up, as root) runs the web process as this user; only the agent needs root.
WEB_USER = os.environ.get("CROSSEDGE_WEB_USER", "crossedge")
METRICS_TOKEN = os.environ.get("CROSSEDGE_METRICS_TOKEN", "")
METRICS_ALLOW = envlist("CROSSEDGE_METRICS_ALLOW", "127.0.0.0/8,::1/128")
# Reverse proxies whose X-Forwarded-For is believed. A request forwarded by any other
# (it carries the header) is judged by its token alone, never by the proxy's address.
TRUSTED_PROXIES = envlist("CROSSEDGE_TRUSTED_PROXIES", "")

# The connect4/connect6 programs: which container cgroups they observe and enforce on (a glob
# on the cgroup path; they attach above it, never at the root), and where their pins live.
ENFORCE_SCOPE = os.environ.get("CROSSEDGE_ENFORCE_SCOPE", "*")
PIN_ROOT = os.environ.get("CROSSEDGE_PIN_ROOT", "/sys/fs/bpf/crossedge")
DOCKER_ROOTS = envlist("CROSSEDGE_DOCKER_ROOTS", f"/var/lib/docker,{VAR_DIR / 'demo-docker'}")
PODMAN_ROOTS = envlist("CROSSEDGE_PODMAN_ROOTS", "/var/lib/containers/storage")
