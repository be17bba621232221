"""deploy/nginx.conf read as a tree of directives, and run in the system's
nginx on free local ports.

The reader knows enough of nginx's grammar for this file: words, quoted
strings, ``#`` comments, ``;`` and blocks. The running copy is the file with
its listen addresses, upstream and document root pointed at the test's own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from monitor.kafka.embedded import free_port
from monitor.management.processes import stop_processes
from tests.support.project import ROOT

NGINX_CONF = ROOT / "deploy" / "nginx.conf"

# .ci/run installs Debian's nginx, so on CI these run; elsewhere they skip
# without it, and say so.
needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None and os.getenv("CI") != "true",
    reason="nginx is not installed (apt-get install nginx): deploy/nginx.conf was read "
    "and checked, not run",
)


@dataclass
class Directive:
    """One directive: its name, its arguments, and its block (None for a simple one)."""

    name: str
    args: list[str]
    block: list[Directive] | None = None

    def all(self, name: str) -> list[Directive]:
        """The directives ``name`` directly in this block, in order."""
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str, *args: str) -> Directive:
        """The only directive ``name`` whose arguments start with ``args``; fails
        the test unless there is exactly one."""
        found = [d for d in self.all(name) if d.args[: len(args)] == list(args)]
        assert len(found) == 1, f"{self.name} {self.args}: {len(found)} x {name} {args}"
        return found[0]

    def add(self, directive: Directive) -> None:
        assert self.block is not None, f"{self.name} has no block"
        self.block.append(directive)

    def value(self, name: str) -> str:
        return " ".join(self.one(name).args)

    def headers(self, directive: str = "proxy_set_header") -> dict[str, str]:
        """{header: value} that the ``directive`` lines of this block set."""
        return {d.args[0]: " ".join(d.args[1:]) for d in self.all(directive)}


def nginx_tokens(text: str) -> Iterator[str]:
    """Words (quotes removed), ``{``, ``}`` and ``;``, comments skipped."""
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif char in "{};":
            yield char
            i += 1
        elif char in "\"'":
            end = text.index(char, i + 1)
            yield text[i + 1 : end]
            i = end + 1
        else:
            end = i
            while end < len(text) and not text[end].isspace() and text[end] not in "{};":
                end += 1
            yield text[i:end]
            i = end


def parse_nginx(text: str) -> Directive:
    """The configuration as a tree of directives under one named "main"."""
    root = Directive("main", [], [])
    open_blocks = [root]
    words: list[str] = []
    for token in nginx_tokens(text):
        if token == ";":
            open_blocks[-1].add(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            block = Directive(words[0], words[1:], [])
            open_blocks[-1].add(block)
            open_blocks.append(block)
            words = []
        elif token == "}":
            assert not words, f"unterminated {words}"
            open_blocks.pop()
        else:
            words.append(token)
    assert len(open_blocks) == 1 and not words
    return root


def nginx_http() -> Directive:
    """The ``http`` block of deploy/nginx.conf."""
    return parse_nginx(NGINX_CONF.read_text()).one("http")


def nginx_upstream_servers() -> dict[str, list[str]]:
    """{upstream name: its server addresses} of deploy/nginx.conf."""
    return {u.args[0]: [s.args[0] for s in u.all("server")] for u in nginx_http().all("upstream")}


def site(nginx: Directive) -> Directive:
    """The server block that listens on port 80."""
    return next(s for s in nginx.all("server") if any(d.args[0] == "80" for d in s.all("listen")))


def seconds(value: str) -> int:
    """An nginx time (``30``, ``90s``, ``5m``, ``1h``, ``2d``) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def size_in_bytes(value: str) -> int:
    """An nginx size (``512``, ``8k``, ``25m``, ``1g``) in bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def nginx_map(nginx: Directive, source: str, target: str) -> dict[str, str]:
    """The entries of ``map source target {...}``."""
    block = nginx.one("map", source, target)
    return {d.name: " ".join(d.args) for d in block.block or []}


def nginx_location_pattern(location: Directive) -> re.Pattern[str]:
    """A regular-expression location (``~`` or ``~*``) as a compiled pattern."""
    modifier, pattern = location.args
    assert modifier in ("~", "~*")
    return re.compile(pattern, re.IGNORECASE if modifier == "~*" else 0)


def nginx_version() -> tuple[int, ...] | None:
    """The installed nginx's version, or None without one."""
    if not shutil.which("nginx"):
        return None
    output = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/([\d.]+)", output)
    assert found, f"nginx -v said {output!r}"
    return tuple(int(part) for part in found.group(1).split("."))


@dataclass
class RunningProxy:
    """A running nginx: its address, and the directory it serves files from."""

    url: str
    srv: Path


@contextmanager
def running_nginx(tmp_path: Path, upstream: str) -> Iterator[RunningProxy]:
    """nginx with deploy/nginx.conf, but listening on free local ports, serving files
    from ``tmp_path/srv`` and passing requests to ``upstream`` (``host:port``); stopped
    by its PID at the end."""
    port, health_port, srv = free_port(), free_port(), tmp_path / "srv"
    text = NGINX_CONF.read_text()
    replacements = [
        (r"server web:\d+ resolve;", f"server {upstream};"),
        (r"listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        (r"listen 127\.0\.0\.1:8081;", f"listen 127.0.0.1:{health_port};"),
        (r"root /srv;", f"root {srv};"),
        (
            r"http \{",
            f"http {{ access_log {tmp_path}/access.log; "
            f"client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;",
        ),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count, pattern
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    (srv / "media").mkdir(parents=True)
    globals_ = f"daemon off; pid {tmp_path}/nginx.pid; user root;"
    process = subprocess.Popen(
        ["nginx", "-c", str(config), "-e", str(tmp_path / "error.log"), "-g", globals_]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
        yield RunningProxy(url, srv)
    finally:
        stop_processes([process])
