"""HTTP security: the Content-Security-Policy on every page (checked in a real
browser too), how uploaded media is served, the secret key, and the
production settings under ``manage.py check --deploy``."""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django.utils.http import http_date
from PIL import Image

from eventsite.media import MEDIA_HEADERS
from monitor.feed.images import PhotoLimits, process_photo
from tests.support.browser import needs_chromium
from tests.support.images import jpeg_bytes
from tests.support.project import ROOT
from tests.support.stack import Poster, Stack

SANDBOX = "default-src 'none'; sandbox"


def _broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("broken on purpose")


# Used by the error-page test (pytest.mark.urls).
urlpatterns = [path("broken/", _broken)]


# --- The policy on pages ----------------------------------------------------


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in filter(None, (item.strip() for item in policy.split(";"))):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_the_policy_allows_scripts_and_connections_from_the_site_only(settings) -> None:
    policy = directives(settings.CONTENT_SECURITY_POLICY)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:", "blob:"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert not any("unsafe" in value for values in policy.values() for value in values)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root-12345")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url, who, status",
    [
        ("/", "user", 200),
        ("/accounts/login/", None, 200),
        ("/dashboard/", "staff", 200),
        ("/admin/", "staff", 200),
        ("/admin/monitor/analyticsevent/analytics/", "staff", 200),
        ("/admin/login/", None, 200),
        ("/no-such-page/", None, 404),
        ("/posts/999999/", "user", 404),
    ],
)
def test_every_page_carries_the_policy(
    client, settings, user, staff, url: str, who: str | None, status: int
) -> None:
    if who:
        client.force_login(user if who == "user" else staff)
    response = client.get(url)
    assert response.status_code == status
    assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_an_error_page_carries_the_policy(settings) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/broken/")
    assert response.status_code == 500
    assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY


@pytest.mark.django_db
def test_the_policy_comes_from_the_setting(client, settings) -> None:
    settings.CONTENT_SECURITY_POLICY = "default-src 'none'"
    assert client.get("/accounts/login/")["Content-Security-Policy"] == "default-src 'none'"


# --- Media ------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    """An empty MEDIA_ROOT for one test, with a file just outside it."""
    root = tmp_path / "media"
    (root / "photos").mkdir(parents=True)
    settings.MEDIA_ROOT = root
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes())
    return root


def stored_photo(media: Path, name: str, image_format: str = "JPEG") -> bytes:
    """A photo as the upload pipeline stores it (re-encoded), at ``photos/<name>``."""
    upload = io.BytesIO()
    Image.new("RGB", (80, 60), "orange").save(upload, image_format)
    upload.seek(0)
    content = process_photo(upload, PhotoLimits.from_settings()).photo.content
    (media / "photos" / name).write_bytes(content)
    return content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, image_format, content_type",
    [
        ("a1b2c3.jpg", "JPEG", "image/jpeg"),
        ("a1b2c3.jpeg", "JPEG", "image/jpeg"),
        ("a1b2c3.png", "PNG", "image/png"),
        ("a1b2c3.webp", "WEBP", "image/webp"),
    ],
)
def test_a_stored_photo_is_served_as_its_image_type_with_safe_headers(
    client, media: Path, name: str, image_format: str, content_type: str
) -> None:
    content = stored_photo(media, name, image_format)
    response = client.get(f"/media/photos/{name}")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Length"] == str(len(content))
    assert b"".join(response.streaming_content) == content
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == SANDBOX  # not replaced by the site's
    assert response["Cross-Origin-Resource-Policy"] == "same-origin"
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    assert response["ETag"] and response["Last-Modified"]


@pytest.mark.django_db
def test_head_answers_the_headers_without_the_body(client, media: Path) -> None:
    content = stored_photo(media, "head.jpg")
    response = client.head("/media/photos/head.jpg")
    assert response.status_code == 200
    assert response.content == b""
    assert response["Content-Length"] == str(len(content))
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_a_conditional_get_answers_304_until_the_file_changes(client, media: Path) -> None:
    stored_photo(media, "cached.jpg")
    file_url = "/media/photos/cached.jpg"
    first = client.get(file_url)
    by_date = client.get(file_url, headers={"If-Modified-Since": first["Last-Modified"]})
    by_etag = client.get(file_url, headers={"If-None-Match": first["ETag"]})
    for response in (by_date, by_etag):
        assert response.status_code == 304
        assert response.content == b""
        assert response["Cache-Control"] == MEDIA_HEADERS["Cache-Control"]
        assert response["X-Content-Type-Options"] == "nosniff"
    file = media / "photos" / "cached.jpg"
    before = http_date(file.stat().st_mtime - 60)
    assert client.get(file_url, headers={"If-Modified-Since": before}).status_code == 200
    # Stored files never change, but if one did, its ETag would.
    os.utime(file, (time.time() - 3600, time.time() - 3600))
    assert client.get(file_url, headers={"If-None-Match": first["ETag"]}).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, content",
    [
        ("page.html", b"<script>alert(1)</script>"),
        ("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        ("script.js", b"alert(1)"),
        ("notes.txt", b"secret"),
        ("animation.gif", b"GIF89a"),
        ("photo.jpg.html", b"<script>alert(1)</script>"),
        ("noextension", b"<script>alert(1)</script>"),
        (".hidden.jpg", jpeg_bytes()),
    ],
)
def test_other_files_in_media_root_are_not_served(
    client, media: Path, name: str, content: bytes
) -> None:
    (media / "photos" / name).write_bytes(content)
    response = client.get(f"/media/photos/{name}")
    assert response.status_code == 404
    assert content not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/media/", "/media/photos", "/media/photos/", "/media/album.jpg"])
def test_directories_are_not_served(client, media: Path, url: str) -> None:
    (media / "album.jpg").mkdir()
    stored_photo(media, "in-a-directory.jpg")
    assert client.get(url).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/media/../outside.jpg",
        "/media/photos/../../outside.jpg",
        "/media/%2e%2e/outside.jpg",
        "/media/%2E%2E%2Foutside.jpg",
        "/media/..%2foutside.jpg",
        "/media/..%5coutside.jpg",
        "/media/%252e%252e/outside.jpg",
        "/media/./../outside.jpg",
        "/media/../settings.py",
        "/media/%2e%2e/%2e%2e/eventsite/settings.py",
        "/media/photos/%00.jpg",
    ],
)
def test_paths_out_of_media_root_are_not_served(client, media: Path, url: str) -> None:
    stored_photo(media, "inside.jpg")
    response = client.get(url)
    assert response.status_code == 404
    assert b"\xff\xd8" not in response.content  # no JPEG


@pytest.mark.django_db
def test_absolute_paths_and_links_out_of_media_root_are_not_served(client, media: Path) -> None:
    outside = media.parent / "outside.jpg"
    (media / "photos" / "link.jpg").symlink_to(outside)
    (media / "photos" / "page.html").write_bytes(b"<script>alert(1)</script>")
    (media / "photos" / "page-link.jpg").symlink_to(media / "photos" / "page.html")
    for url in (
        "/media/photos/link.jpg",
        "/media/photos/page-link.jpg",
        f"/media/{outside}",
        f"/media/{str(outside).replace('/', '%2f')}",
    ):
        assert client.get(url).status_code == 404, url
    (media / "photos" / "inside-link.jpg").symlink_to(media / "photos" / "stored.jpg")
    stored_photo(media, "stored.jpg")
    assert client.get("/media/photos/inside-link.jpg").status_code == 200


@pytest.mark.django_db
def test_media_answers_get_and_head_only(client, media: Path) -> None:
    stored_photo(media, "post.jpg")
    response = client.post("/media/photos/post.jpg")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert b"GET and HEAD only" in response.content


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_running_server_serves_photos_and_nothing_out_of_media_root(
    stack: Stack, media_root: Path
) -> None:
    (media_root / "photos").mkdir(exist_ok=True)
    photo = jpeg_bytes()
    (media_root / "photos" / "served.jpg").write_bytes(photo)
    (media_root.parent / "beside-media.jpg").write_bytes(photo)
    response = httpx.get(f"{stack.base_url}/media/photos/served.jpg")
    assert response.status_code == 200
    assert response.content == photo
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == SANDBOX
    # Raw requests: an HTTP client library would remove the dot segments itself.
    for raw_path in ("/media/../beside-media.jpg", "/media/%2e%2e/beside-media.jpg"):
        assert raw_status(stack.base_url, raw_path) == 404, raw_path


def raw_status(base_url: str, raw_path: str) -> int:
    """The status code of a GET for ``raw_path`` sent exactly as written."""
    address = urlsplit(base_url)
    assert address.hostname and address.port
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        request = f"GET {raw_path} HTTP/1.1\r\nHost: {address.netloc}\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        status_line = connection.makefile("rb").readline()
    return int(status_line.split()[1])


# --- Secret key and production settings (each in its own process) ---------


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py with a clean environment: only ``env`` among Django's and ours."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "EVENTSITE_", "KAFKA_", "DATABASE_"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def var_dir(tmp_path: Path) -> str:
    return str(tmp_path / "var")


def strong_key() -> str:
    return secrets.token_urlsafe(64)


def production_env(var_dir: str, **overrides: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "eventsite.production",
        "DJANGO_SECRET_KEY": strong_key(),
        "DJANGO_ALLOWED_HOSTS": "events.example.com",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "EVENTSITE_VAR_DIR": var_dir,
        **overrides,
    }


def test_with_debug_off_the_site_refuses_to_start_without_a_secret_key(var_dir: str) -> None:
    refused = manage("check", DJANGO_DEBUG="0", EVENTSITE_VAR_DIR=var_dir)
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in refused.stderr

    started = manage(
        "check", DJANGO_DEBUG="0", DJANGO_SECRET_KEY=strong_key(), EVENTSITE_VAR_DIR=var_dir
    )
    assert started.returncode == 0, started.stderr
    assert "System check identified no issues" in started.stdout


def test_check_deploy_passes_with_the_production_settings(var_dir: str) -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env(var_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_check_deploy_reports_what_the_production_switches_turn_off(var_dir: str) -> None:
    env = production_env(var_dir, EVENTSITE_SSL_REDIRECT="false", EVENTSITE_HSTS_SECONDS="0")
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # no HSTS
    assert "security.W008" in result.stderr  # no redirect to HTTPS


@pytest.mark.parametrize(
    "key, message",
    [
        ("", "DJANGO_SECRET_KEY must be set"),
        ("short-but-random-Zq9", "DJANGO_SECRET_KEY is too weak"),
        ("ab" * 40, "DJANGO_SECRET_KEY is too weak"),
        # Django's startproject prefix on an otherwise strong key (fixed, so that
        # every pytest-xdist worker collects the same test ids).
        ("django-insecure-" + "Zq9x-Lm2_Wv7Rt4" * 4, "DJANGO_SECRET_KEY is too weak"),
        (
            "insecure-development-key-only-for-the-embedded-default",
            "DJANGO_SECRET_KEY is too weak",
        ),
    ],
)
def test_the_production_settings_refuse_a_missing_or_weak_secret_key(
    var_dir: str, key: str, message: str
) -> None:
    result = manage("check", **production_env(var_dir, DJANGO_SECRET_KEY=key))
    assert result.returncode != 0
    assert message in result.stderr


def test_the_production_settings_refuse_to_run_without_allowed_hosts(var_dir: str) -> None:
    result = manage("check", **production_env(var_dir, DJANGO_ALLOWED_HOSTS=""))
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must be set with eventsite.production" in result.stderr


def test_the_production_settings_refuse_debug(var_dir: str) -> None:
    result = manage("check", **production_env(var_dir, DJANGO_DEBUG="1"))
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be off with eventsite.production" in result.stderr


SHOW_SETTINGS = """
import json
from django.conf import settings as s
names = ["DEBUG", "SERVE_FILES", "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER",
         "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
         "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CONTENT_SECURITY_POLICY"]
print(json.dumps({name: getattr(s, name) for name in names}))
"""


def show_settings(env: dict[str, str]) -> dict[str, object]:
    import json

    result = manage("shell", "-c", SHOW_SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_production_settings_follow_their_switches(var_dir: str) -> None:
    defaults = show_settings(production_env(var_dir))
    assert defaults == {
        "DEBUG": False,
        "SERVE_FILES": False,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "CONTENT_SECURITY_POLICY": defaults["CONTENT_SECURITY_POLICY"],
    }
    assert "script-src 'self'" in str(defaults["CONTENT_SECURITY_POLICY"])

    switched = show_settings(
        production_env(
            var_dir,
            EVENTSITE_SERVE_FILES="true",
            EVENTSITE_SSL_REDIRECT="false",
            EVENTSITE_TRUST_X_FORWARDED_PROTO="true",
            EVENTSITE_HSTS_SECONDS="600",
            EVENTSITE_HSTS_INCLUDE_SUBDOMAINS="false",
            EVENTSITE_HSTS_PRELOAD="false",
            EVENTSITE_CSP="default-src 'self'",
        )
    )
    assert switched["SERVE_FILES"] is True
    assert switched["SECURE_SSL_REDIRECT"] is False
    assert switched["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert switched["SECURE_HSTS_SECONDS"] == 600
    assert switched["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert switched["SECURE_HSTS_PRELOAD"] is False
    assert switched["CONTENT_SECURITY_POLICY"] == "default-src 'self'"


# --- In a real browser -------------------------------------------------------

# Runs in every page before its own scripts: records each violation the
# browser reports, with where it happened.
WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"} `
    + `in ${event.sourceFile || event.documentURI}:${event.lineNumber}`
  );
});
"""


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@needs_chromium
def test_the_feed_dashboard_and_admin_run_under_the_policy(browser, stack: Stack) -> None:
    context = browser.new_context(base_url=stack.base_url)
    context.add_init_script(WATCH_VIOLATIONS)
    console: list[str] = []

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            console.append(f"{message.page.url if message.page else '?'}: {message.text}")

    context.on("console", on_console)
    page = context.new_page()
    page.goto("/accounts/signup/")
    page.fill("input[name=username]", "csp-watcher")
    page.fill("input[name=password]", "a-long-pass-phrase-9")
    page.click("button[type=submit]")
    page.wait_for_url(stack.base_url + "/")
    User.objects.filter(username="csp-watcher").update(is_staff=True, is_superuser=True)

    # The feed: its stream and the notices socket go live under connect-src 'self'.
    feed = context.new_page()
    response = feed.goto("/")
    assert (
        response is not None and "connect-src 'self'" in response.headers["content-security-policy"]
    )
    feed.wait_for_selector('#stream-status[data-state="live"]', timeout=15_000)
    feed.wait_for_selector('.notices-menu[data-state="live"]', timeout=15_000)

    dashboard = context.new_page()
    dashboard.goto("/dashboard/")
    dashboard.wait_for_selector('#stream-status[data-state="live"]', timeout=15_000)
    # A live event arrives over the WebSocket on both pages.
    post_id = Poster(stack.base_url, "csp-poster").post("posted under the policy")
    dashboard.wait_for_selector(
        '#tail tr.event[data-type="photo.posted"]:not([data-replay])', timeout=10_000
    )
    feed.wait_for_selector("article.post >> text=posted under the policy", timeout=10_000)
    # The photo (same origin, img-src 'self') loads.
    feed.wait_for_function(
        "[...document.querySelectorAll('article.post img')]"
        ".some(image => image.complete && image.naturalWidth > 0)",
        timeout=10_000,
    )

    # The other pages; in the admin, our analytics page and Django's own pages
    # with their scripts.
    user_id = User.objects.get(username="csp-watcher").pk
    opened = {"/": feed, "/dashboard/": dashboard}
    for url in (
        "/posts/new/",
        f"/posts/{post_id}/",
        "/users/csp-poster/",
        "/notices/",
        "/settings/tokens/",
        "/admin/monitor/analyticsevent/analytics/",
        "/admin/",
        "/admin/monitor/analyticsevent/",
        f"/admin/auth/user/{user_id}/change/",
    ):
        opened[url] = context.new_page()
        response = opened[url].goto(url)
        assert response is not None and response.status == 200, url
        opened[url].wait_for_load_state("load")

    problems = []
    for url, each in opened.items():
        each.wait_for_timeout(200)  # violation events are delivered as tasks
        problems += [f"{url}: {item}" for item in violations(each)]
    problems += console
    assert not problems, "Content-Security-Policy violations:\n" + "\n".join(problems)

    # The policy is enforced, and the watch above sees what it blocks: another
    # origin (same port, other host name) is refused to fetch and WebSocket.
    other = stack.base_url.replace("127.0.0.1", "localhost")
    outcome = dashboard.evaluate(
        "url => fetch(url).then(() => 'fetched', () => 'refused')", f"{other}/healthz"
    )
    dashboard.evaluate(
        "url => { try { new WebSocket(url) } catch (error) { return String(error) } }",
        other.replace("http", "ws") + "/ws/events/",
    )
    dashboard.wait_for_function("window.__cspViolations.length >= 2", timeout=5_000)
    assert outcome == "refused"
    blocked = violations(dashboard)
    assert any(item.startswith(f"connect-src blocked {other}/healthz") for item in blocked)
    assert any(item.startswith("connect-src blocked ws://localhost") for item in blocked)
    context.close()
