"""The proxy (deploy/nginx.conf) against the site's own rules: WebSockets
upgraded and read long enough for the pings, the client's address and scheme
passed on, only photos served from media with the site's headers, the static
files collected in the image, uploads as large as the site accepts.

The configuration is read (tests/support/nginx.py); where nginx is installed
it is also run, in front of nothing or of a running stack.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from eventsite.media import MEDIA_HEADERS, MEDIA_TYPES
from monitor.kafka.embedded import free_port
from monitor.live.routing import websocket_urlpatterns
from monitor.security.tokens import token_create
from tests.support.compose import service
from tests.support.dockerfile import app_stage, dockerfile_stages
from tests.support.environment import load_settings, run
from tests.support.images import jpeg_bytes
from tests.support.nginx import (
    NGINX_CONF,
    Directive,
    needs_nginx,
    nginx_location_pattern,
    nginx_map,
    nginx_version,
    running_nginx,
    seconds,
    site,
    size_in_bytes,
)
from tests.support.project import ROOT
from tests.support.stack import Stack


def test_websockets_pass_through_the_proxy_with_upgrade_and_long_reads(
    nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    location = site(nginx).one("location", "/ws/")
    for route in websocket_urlpatterns:
        assert f"/{route.pattern}".startswith("/ws/"), f"/{route.pattern} is not under /ws/"
    assert location.value("proxy_pass") == "http://web"
    assert location.value("proxy_http_version") == "1.1"
    headers = location.headers()
    assert headers["Upgrade"] == "$http_upgrade"
    assert nginx_map(nginx, "$http_upgrade", headers["Connection"])["default"] == "upgrade"
    web = app_settings["web"]
    # Reads wait for the next ping at least, and its answer.
    ping = web["WS_PING_SECONDS"] + web["WS_PING_TIMEOUT_SECONDS"]
    assert seconds(location.value("proxy_read_timeout")) > ping


def test_every_proxied_location_says_who_the_client_is(nginx: Directive) -> None:
    proxied = [loc for loc in site(nginx).all("location") if loc.all("proxy_pass")]
    assert {tuple(loc.args) for loc in proxied} == {("/ws/",), ("/",)}
    for location in proxied:
        headers = location.headers()
        # As the client sent it, port included: CSRF and the WebSocket Origin check
        # compare it with the Origin header.
        assert headers["Host"] == "$http_host"
        # Appended to, never replaced: the app reads it from the right (README, "Rate limits").
        assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
        # "https" only when the TLS terminator in front said so.
        forwarded_proto = nginx_map(nginx, "$http_x_forwarded_proto", headers["X-Forwarded-Proto"])
        assert forwarded_proto == {"default": "$scheme", "https": "https"}


def test_the_proxy_serves_only_photos_from_media_with_the_sites_headers(
    compose: dict[str, Any], nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    web = app_settings["web"]
    media = site(nginx).one("location", web["MEDIA_URL"])
    assert media.value("disable_symlinks") == "on"
    assert media.value("return") == "404"
    (photos,) = media.all("location")
    pattern = nginx_location_pattern(photos)
    for extension in MEDIA_TYPES:
        for name in (f"a{extension}", f"ab/cd/e{extension.upper()}"):
            assert pattern.search(f"{web['MEDIA_URL']}{name}"), name
    for name in ("x.svg", "x.html", "x.gif", "x.jpg.html", ".x.jpg", "a/.b/c.png", "x.jpg/", "x"):
        assert not pattern.search(f"{web['MEDIA_URL']}{name}"), name
    types = {ext: d.name for d in photos.one("types").block or [] for ext in d.args}
    assert {f".{ext}": kind for ext, kind in types.items()} == MEDIA_TYPES
    added = {d.args[0]: d.args[1] for d in photos.all("add_header")}
    assert added == MEDIA_HEADERS
    assert all(d.args[-1] == "always" for d in photos.all("add_header"))
    (methods,) = photos.all("if")
    assert methods.args == ["($request_method", "!~", "^(?:GET|HEAD)$)"]
    assert methods.value("return") == "405"

    # The proxy reads the volume the web processes write to MEDIA_ROOT.
    directory = media.value("root") + web["MEDIA_URL"].rstrip("/")
    volume = next(
        v.split(":")[0]
        for v in service(compose, "proxy")["volumes"]
        if v.split(":")[1] == directory
    )
    assert f"{volume}:{web['MEDIA_ROOT']}" in service(compose, "web")["volumes"]


def test_the_proxy_serves_the_static_files_collected_in_the_image(
    compose: dict[str, Any], nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    web = app_settings["web"]
    stages = dockerfile_stages()
    app = app_stage(compose)
    (collect_env,) = [env for env, run in app.runs if "collectstatic" in run]
    collected = load_settings(collect_env, "STATIC_ROOT")["STATIC_ROOT"]
    # The image's project directory is WORKDIR; here it is ROOT.
    collected = collected.replace(str(ROOT), app.workdir, 1)
    assert collected == web["STATIC_ROOT"].replace(str(ROOT), app.workdir, 1)
    proxy_stage = stages[service(compose, "proxy")["build"]["target"]]
    (copied,) = [(sources, dest) for src, sources, dest in proxy_stage.copies if src == "app"]
    assert copied[0] == [collected]
    location = site(nginx).one("location", web["STATIC_URL"])
    assert location.value("root") + web["STATIC_URL"].rstrip("/") == copied[1]
    assert (None, ["deploy/nginx.conf"], "/etc/nginx/nginx.conf") in proxy_stage.copies


def test_the_proxy_lets_through_the_largest_photo_the_site_accepts(
    nginx: Directive, app_settings: dict[str, dict[str, Any]]
) -> None:
    limit = size_in_bytes(nginx.value("client_max_body_size"))
    assert limit > app_settings["web"]["MAX_PHOTO_BYTES"]


@needs_nginx
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    version = nginx_version()
    assert version is not None
    text = NGINX_CONF.read_text()
    if version < (1, 27, 3):
        # Older nginx has no "resolve" for upstream servers and would look up the
        # service name at start: point the copy at an address, keep the rest.
        text, count = re.subn(r"server web:(\d+) resolve;", r"server 127.0.0.1:\1;", text)
        assert count == 1
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    result = subprocess.run(
        ["nginx", "-t", "-c", str(config), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@needs_nginx
def test_the_proxy_serves_photos_and_static_files_and_nothing_else(tmp_path: Path) -> None:
    closed = free_port()
    with running_nginx(tmp_path, f"127.0.0.1:{closed}") as proxy:
        media = proxy.srv / "media"
        photo = jpeg_bytes()
        (media / "ab").mkdir()
        (media / "ab" / "photo.jpg").write_bytes(photo)
        (media / "ab" / "shot.webp").write_bytes(b"RIFF....WEBP")
        for name in ("page.html", "evil.svg", ".hidden.jpg", "photo.jpg.html"):
            (media / name).write_bytes(b"<script>alert(1)</script>")
        (proxy.srv / "secret.jpg").write_bytes(photo)
        (media / "link.jpg").symlink_to(proxy.srv / "secret.jpg")
        static = run(
            ["manage.py", "collectstatic", "--noinput"],
            {"DJANGO_STATIC_ROOT": str(proxy.srv / "static")},
        )
        assert static.returncode == 0, static.stderr

        with httpx.Client(base_url=proxy.url) as client:
            response = client.get("/media/ab/photo.jpg")
            assert response.status_code == 200 and response.content == photo
            assert response.headers["Content-Type"] == "image/jpeg"
            for header, value in MEDIA_HEADERS.items():
                assert response.headers[header] == value
            assert client.get("/media/ab/shot.webp").headers["Content-Type"] == "image/webp"
            assert client.head("/media/ab/photo.jpg").status_code == 200
            assert client.post("/media/ab/photo.jpg").status_code == 405
            for path in (
                "/media/page.html",
                "/media/evil.svg",
                "/media/.hidden.jpg",
                "/media/photo.jpg.html",
                "/media/link.jpg",
                "/media/missing.jpg",
                "/media/ab/",
                "/media/",
            ):
                assert client.get(path).status_code == 404, path

            script = client.get("/static/monitor/stream.js")
            assert script.status_code == 200
            assert script.content == (ROOT / "static" / "monitor" / "stream.js").read_bytes()
            assert script.headers["Content-Type"] == "application/javascript"
            assert script.headers["X-Content-Type-Options"] == "nosniff"
            assert client.get("/static/admin/css/base.css").headers["Content-Type"] == "text/css"
            # Anything else goes to the web processes (none are running here).
            assert client.get("/healthz").status_code == 502


@needs_nginx
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_proxy_passes_requests_and_websockets_to_the_web_processes(
    tmp_path: Path, stack: Stack, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user(username="proxied", password="pw-proxied-1")
    token = token_create(user=user, name="proxy")[1]
    with running_nginx(tmp_path, stack.base_url.removeprefix("http://")) as proxy:
        health = httpx.get(f"{proxy.url}/healthz", timeout=10)
        assert health.status_code in (200, 503) and "database" in health.json()
        ws_url = proxy.url.replace("http://", "ws://") + "/ws/events/"
        headers = {"Authorization": f"Bearer {token}"}
        with ws_connect(ws_url, additional_headers=headers, open_timeout=10) as stream:
            welcome = json.loads(stream.recv(timeout=10))
            assert welcome["type"] == "welcome" and welcome["user"] == "proxied"
            stream.send(json.dumps({"type": "ping"}))
            assert json.loads(stream.recv(timeout=10)) == {"type": "pong"}
        # A page of the site, signed in by its cookie: its Origin names the proxy's
        # address, port included, which must reach the site as the Host.
        browser = Client()
        browser.force_login(user)
        cookie = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}
        with ws_connect(ws_url, origin=Origin(proxy.url), additional_headers=cookie) as stream:
            welcome = json.loads(stream.recv(timeout=10))
            assert welcome["type"] == "welcome" and welcome["user"] == "proxied"
