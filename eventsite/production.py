"""Production settings: ``DJANGO_SETTINGS_MODULE=eventsite.production``.

The base settings (eventsite/settings.py) with HTTPS and the rest of what
``manage.py check --deploy`` asks for. It refuses to load, with a message
naming the variable, if DEBUG is asked for, if ``DJANGO_SECRET_KEY`` is
missing or weak, or if ``DJANGO_ALLOWED_HOSTS`` is not set. Each variable is
documented in the README ("Security").
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from .env import envbool, envint, envlist
from .settings import *  # noqa: F403
from .settings import DEVELOPMENT_SECRET_KEY

# A production process never shows tracebacks: refuse rather than quietly
# ignore an operator who believes DEBUG is on.
if envbool("DJANGO_DEBUG", False):
    raise ImproperlyConfigured("DJANGO_DEBUG must be off with eventsite.production")
DEBUG = False

MIN_SECRET_KEY_LENGTH = 50


def check_secret_key(key: str) -> str:
    """``key`` if it is strong enough to sign sessions; ImproperlyConfigured if not.

    The same test as Django's deploy check (security.W009): at least 50
    characters, at least 5 different ones, not a generated insecure key, and
    not the development key of the base settings.
    """
    if not key:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set with eventsite.production")
    if (
        len(key) < MIN_SECRET_KEY_LENGTH
        or len(set(key)) < 5
        or key.startswith("django-insecure-")
        or key == DEVELOPMENT_SECRET_KEY
    ):
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is too weak: use at least {MIN_SECRET_KEY_LENGTH} random "
            "characters, e.g. from "
            '`python -c "import secrets; print(secrets.token_urlsafe(64))"`'
        )
    return key


SECRET_KEY = check_secret_key(os.getenv("DJANGO_SECRET_KEY", ""))

# The base settings default to local names; here they must be given.
if not envlist("DJANGO_ALLOWED_HOSTS", ""):
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS must be set with eventsite.production (e.g. events.example.com)"
    )

# A reverse proxy serves /static/ and /media/ (README, "Security").
SERVE_FILES = envbool("EVENTSITE_SERVE_FILES", False)

# --- HTTPS -------------------------------------------------------------------
SECURE_SSL_REDIRECT = envbool("EVENTSITE_SSL_REDIRECT", True)
# Orchestrators probe health over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# Behind a proxy that terminates TLS, requests reach Django over HTTP: trust
# the proxy's X-Forwarded-Proto, but only when told that a proxy sets it
# (and strips any the client sent), or a client could claim HTTPS.
if envbool("EVENTSITE_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = envint("EVENTSITE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("EVENTSITE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool("EVENTSITE_HSTS_PRELOAD", True)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
