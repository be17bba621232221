"""Settings for eventsite, read from environment variables (12-factor).

Every variable is documented in the README. With nothing set, the site runs
on its embedded default: SQLite and media under ``var/``, and a local
Kafka-compatible broker that ``manage.py runstack`` starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .database import database_from_environment
from .env import envbool, envint, envlist, envnetworks, envrates
from .kafka_security import check_kafka_security

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("EVENTSITE_VAR_DIR", BASE_DIR / "var"))

DEBUG = envbool("DJANGO_DEBUG", True)
DEVELOPMENT_SECRET_KEY = "insecure-development-key-only-for-the-embedded-default"
SECRET_KEY = os.getenv("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "monitor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "eventsite.security.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Security headers on every response (README, "Security"); eventsite.production
# adds the HTTPS settings.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# eventsite/security.py adds this policy to every response that has none:
# scripts, styles, fetches and WebSockets from this site only ('self' covers
# ws: and wss: to the same host and port). EVENTSITE_CSP replaces it whole.
CONTENT_SECURITY_POLICY = os.getenv("EVENTSITE_CSP") or (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)

ROOT_URLCONF = "eventsite.urls"
ASGI_APPLICATION = "eventsite.asgi.application"

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

DATABASES = {"default": database_from_environment(VAR_DIR)}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "feed"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.getenv("DJANGO_STATIC_ROOT", VAR_DIR / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.getenv("DJANGO_MEDIA_ROOT", VAR_DIR / "media"))
# The embedded default serves static and media files from the ASGI process;
# a deployment puts a reverse proxy in front and turns this off.
SERVE_FILES = envbool("EVENTSITE_SERVE_FILES", True)
# Web processes on one address (manage.py runweb): Python runs one thread
# at a time per process, so one per core (up to 4 by default). Writes to
# SQLite still take turns, but most of a request's work is not the write.
WEB_PROCESSES = envint("EVENTSITE_WEB_PROCESSES", min(os.cpu_count() or 1, 4))
# Threads per web process for Django's synchronous request handling.
WEB_THREADS = envint("EVENTSITE_WEB_THREADS", 8)

CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
}
if os.getenv("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
        }
    }

# --- Kafka -----------------------------------------------------------------
# Empty: the embedded broker, which manage.py runstack starts for its processes.
KAFKA_BOOTSTRAP_SERVERS = os.getenv("KAFKA_BOOTSTRAP_SERVERS", "")
KAFKA_EVENTS_TOPIC = os.getenv("KAFKA_EVENTS_TOPIC", "user-events")
KAFKA_DLQ_TOPIC = os.getenv("KAFKA_DLQ_TOPIC", f"{KAFKA_EVENTS_TOPIC}.dlq")
# More topics the monitor shows live, besides the events topic (comma-separated).
KAFKA_WATCH_TOPICS = envlist("KAFKA_WATCH_TOPICS", "")
KAFKA_TOPIC_PARTITIONS = envint("KAFKA_TOPIC_PARTITIONS", 3)
KAFKA_TOPIC_REPLICATION = envint("KAFKA_TOPIC_REPLICATION", 1)
# Apache Kafka supports the idempotent producer; the embedded broker does not.
KAFKA_ENABLE_IDEMPOTENCE = envbool("KAFKA_ENABLE_IDEMPOTENCE", False)
KAFKA_LINGER_MS = envint("KAFKA_LINGER_MS", 2)
# A dead consumer leaves its group after this long, and its partitions move on.
KAFKA_SESSION_TIMEOUT_MS = envint("KAFKA_SESSION_TIMEOUT_MS", 10_000)
# How long a live reader's fetch may wait for data; low for low latency
# (runstack sets 50 for its embedded broker: README, "Settings").
KAFKA_LIVE_FETCH_WAIT_MS = envint("KAFKA_LIVE_FETCH_WAIT_MS", 5)
# When ``runbroker`` rolls the embedded broker over (monitor/management/rolling.py).
EMBEDDED_KAFKA_ROLL_RECORDS = envint("EMBEDDED_KAFKA_ROLL_RECORDS", 5_000)
EMBEDDED_KAFKA_ROLL_MB = envint("EMBEDDED_KAFKA_ROLL_MB", 512)
# A live reader this far behind the topic's end, or stalled, fails /healthz and skips ahead.
LIVE_READER_MAX_BEHIND_SECONDS = envint("LIVE_READER_MAX_BEHIND_SECONDS", 10)

# Kafka security, for every producer, consumer and admin client (README,
# "Kafka security"). Checked here: a wrong or ignored setting stops the
# process at start instead of failing, or leaking, at the first connection.
KAFKA_SECURITY_PROTOCOL = os.getenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper()
KAFKA_SASL_MECHANISM = os.getenv("KAFKA_SASL_MECHANISM", "").strip().upper()
KAFKA_SASL_USERNAME = os.getenv("KAFKA_SASL_USERNAME", "")
KAFKA_SASL_PASSWORD = os.getenv("KAFKA_SASL_PASSWORD", "")
KAFKA_SSL_CAFILE = os.getenv("KAFKA_SSL_CAFILE", "")
KAFKA_SSL_CERTFILE = os.getenv("KAFKA_SSL_CERTFILE", "")
KAFKA_SSL_KEYFILE = os.getenv("KAFKA_SSL_KEYFILE", "")
KAFKA_SSL_KEY_PASSWORD = os.getenv("KAFKA_SSL_KEY_PASSWORD", "")
# Off accepts a broker certificate issued for another host name (still signed
# by a trusted CA), for brokers reached by an address their certificates omit.
KAFKA_SSL_CHECK_HOSTNAME = envbool("KAFKA_SSL_CHECK_HOSTNAME", True)
check_kafka_security(
    protocol=KAFKA_SECURITY_PROTOCOL,
    mechanism=KAFKA_SASL_MECHANISM,
    username=KAFKA_SASL_USERNAME,
    password=KAFKA_SASL_PASSWORD,
    cafile=KAFKA_SSL_CAFILE,
    certfile=KAFKA_SSL_CERTFILE,
    keyfile=KAFKA_SSL_KEYFILE,
    key_password=KAFKA_SSL_KEY_PASSWORD,
    bootstrap_servers=KAFKA_BOOTSTRAP_SERVERS,
)

EVENT_SOURCE = os.getenv("EVENTSITE_EVENT_SOURCE", "/eventsite")
# "id:secret,..." signing the site's events (the first signs, all verify); unset:
# a key derived from SECRET_KEY and SECRET_KEY_FALLBACKS (monitor.events.signing).
EVENT_SIGNING_KEYS = os.getenv("EVENT_SIGNING_KEYS", "")
# Publish each event right after its transaction commits; off leaves it to the
# outbox relay alone.
EVENTS_PUBLISH_EAGERLY = envbool("EVENTSITE_PUBLISH_EAGERLY", True)
# The relay re-publishes outbox rows still unsent after this many seconds.
OUTBOX_RELAY_AFTER_SECONDS = envint("OUTBOX_RELAY_AFTER_SECONDS", 5)
# /healthz answers 503 once the oldest unsent event is older than this.
OUTBOX_MAX_AGE_SECONDS = envint("OUTBOX_MAX_AGE_SECONDS", 60)
MAX_EVENT_BYTES = envint("EVENTSITE_MAX_EVENT_BYTES", 1024 * 1024)
# Dead letters larger than this are cut to this size on the DLQ topic (with a header).
DLQ_MAX_RECORD_BYTES = envint("KAFKA_DLQ_MAX_RECORD_BYTES", 8 * 1024 * 1024)
# Consumers fetch records up to this size, so that an oversize record is
# read (and dead-lettered) instead of stalling its partition.
KAFKA_MAX_FETCH_BYTES = envint("KAFKA_MAX_FETCH_BYTES", 32 * 1024 * 1024)
# Records per analytics poll batch, written in one transaction (a batch of
# 2,000 holds SQLite's write lock for some 50 ms; docs/PERFORMANCE.md).
ANALYTICS_BATCH_SIZE = envint("ANALYTICS_BATCH_SIZE", 2000)
# `manage.py prune_analytics` deletes raw analytics events older than this
# many days (whole UTC days); the aggregates are kept, whatever their age.
ANALYTICS_RETENTION_DAYS = envint("EVENTSITE_ANALYTICS_RETENTION_DAYS", 90)
# A worker whose database write fails retries with backoff up to this delay.
WORKER_DB_RETRY_MAX_SECONDS = envint("WORKER_DB_RETRY_MAX_SECONDS", 10)

# One frame per tick at most: each frame costs a system call per client.
FANOUT_TICK_MS = envint("FANOUT_TICK_MS", 10)
FANOUT_CLIENT_QUEUE_FRAMES = envint("FANOUT_CLIENT_QUEUE_FRAMES", 256)
# A client with more than this many bytes unread misses frames (and is told).
FANOUT_CLIENT_MAX_BUFFER_BYTES = envint("FANOUT_CLIENT_MAX_BUFFER_BYTES", 1024 * 1024)
FANOUT_IDLE_STOP_SECONDS = envint("FANOUT_IDLE_STOP_SECONDS", 30)
# A client still behind after this long is closed with code 4008.
FANOUT_SLOW_CLOSE_SECONDS = envint("FANOUT_SLOW_CLOSE_SECONDS", 20)
# WebSocket heartbeats (daphne's pings, set by `manage.py runweb`).
WS_PING_SECONDS = envint("EVENTSITE_WS_PING_SECONDS", 20)
WS_PING_TIMEOUT_SECONDS = envint("EVENTSITE_WS_PING_TIMEOUT_SECONDS", 30)
# What a WebSocket client may send: messages over this size are refused by
# daphne before they reach the application (close code 1009) ...
WS_MAX_MESSAGE_BYTES = envint("EVENTSITE_WS_MAX_MESSAGE_BYTES", 64 * 1024)
# ... and at most this many messages a second, in bursts of WS_MESSAGE_BURST
# (see monitor.live.message_rate; 0 turns the limit off).
WS_MESSAGES_PER_SECOND = envint("EVENTSITE_WS_MESSAGES_PER_SECOND", 20)
WS_MESSAGE_BURST = envint("EVENTSITE_WS_MESSAGE_BURST", 40)
# How often each web process checks that its signed-in sockets' sessions and
# tokens still stand (a logout closes that session's sockets within this).
SOCKET_AUTH_CHECK_MS = envint("EVENTSITE_SOCKET_AUTH_CHECK_MS", 500)
# Resume and history (monitor/live/replay.py): at most this many events per
# partition are replayed to a reconnecting client (the rest are announced
# as missed), and at most this many replays run at once per web process.
STREAM_REPLAY_MAX_EVENTS = envint("STREAM_REPLAY_MAX_EVENTS", 10_000)
STREAM_REPLAY_CONCURRENCY = envint("STREAM_REPLAY_CONCURRENCY", 4)
# Each web process keeps this many of the latest events in memory: replays
# within them need no broker (0: always read the broker).
STREAM_RECENT_EVENTS = envint("STREAM_RECENT_EVENTS", 10_000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {"aiokafka": {"level": os.getenv("KAFKA_LOG_LEVEL", "WARNING")}},
}

# Uploaded photos: larger files, and images with more pixels (checked before
# they are decoded), are refused. What is stored is re-encoded, at most
# MAX_PHOTO_SIDE pixels on its long side, with a thumbnail for the feed.
MAX_PHOTO_BYTES = envint("EVENTSITE_MAX_PHOTO_BYTES", 10 * 1024 * 1024)
MAX_PHOTO_PIXELS = envint("EVENTSITE_MAX_PHOTO_PIXELS", 40_000_000)
MAX_PHOTO_SIDE = envint("EVENTSITE_MAX_PHOTO_SIDE", 4096)
THUMBNAIL_SIDE = envint("EVENTSITE_THUMBNAIL_SIDE", 640)

# --- Operators' dashboard ---------------------------------------------------
# Only staff see /dashboard/ and its data; off, every signed-in user does.
DASHBOARD_STAFF_ONLY = envbool("EVENTSITE_DASHBOARD_STAFF_ONLY", True)
# How often a web process records who watches its streams; a process silent
# for three periods (crashed) no longer counts.
PRESENCE_HEARTBEAT_SECONDS = envint("EVENTSITE_PRESENCE_HEARTBEAT_SECONDS", 5)
# How often each web process asks the database for new notices for the users
# connected to /ws/notices/ through it.
NOTICES_POLL_MS = envint("EVENTSITE_NOTICES_POLL_MS", 500)

# --- Rate limits (monitor/security/ratelimit.py) ----------------------------
# Posting, liking (and unliking), commenting and signing in, counted per
# signed-in user and per client address (sign-ins: per address and per
# username tried); past a limit, requests are answered 429 until the window ends.
RATE_LIMITS = envrates(
    "EVENTSITE_RATE_LIMITS",
    {"post": (10, 60), "like": (120, 60), "comment": (30, 60), "login": (10, 300)},
)
# Proxies whose X-Forwarded-For is believed; from anyone else it is ignored.
TRUSTED_PROXIES = envnetworks("EVENTSITE_TRUSTED_PROXIES")
