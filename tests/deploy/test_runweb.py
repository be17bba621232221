"""``manage.py runweb``: daphne processes on one socket, with WebSocket heartbeats."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from django.test import Client

from monitor.kafka.embedded import free_port
from monitor.management.processes import stop_processes
from tests.support.project import ROOT
from tests.support.stack import Processes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OPCODE_CLOSE, OPCODE_PING = 0x8, 0x9


def read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    """One server frame (opcode, payload), or None once the connection has ended."""
    try:
        header = sock.recv(2, socket.MSG_WAITALL)
    except ConnectionResetError:
        return None
    if len(header) < 2:
        return None
    length = header[1] & 0x7F
    if length == 126:
        length = int.from_bytes(sock.recv(2, socket.MSG_WAITALL))
    elif length == 127:
        length = int.from_bytes(sock.recv(8, socket.MSG_WAITALL))
    return header[0] & 0x0F, sock.recv(length, socket.MSG_WAITALL)


def open_stream(port: int, session: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        (
            "GET /ws/events/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nCookie: sessionid={session}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def test_it_pings_every_socket_and_closes_one_that_never_answers(
    processes: Processes, django_user_model
) -> None:
    user = django_user_model.objects.create_user("heartbeat", password="a-long-pass-phrase-9")
    client = Client()
    client.force_login(user)
    port = free_port()
    env = {
        **processes.env,
        "EVENTSITE_WEB_PROCESSES": "1",
        "EVENTSITE_WS_PING_SECONDS": "1",
        "EVENTSITE_WS_PING_TIMEOUT_SECONDS": "2",
    }
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runweb", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "runweb did not listen"
                time.sleep(0.1)
        sock = open_stream(port, client.cookies["sessionid"].value)
        opened = time.monotonic()
        opcodes = []
        while (frame := read_frame(sock)) is not None:
            opcodes.append((frame[0], round(time.monotonic() - opened, 1)))
            if frame[0] == OPCODE_CLOSE:
                break
        ended = time.monotonic() - opened
        pings = [at for opcode, at in opcodes if opcode == OPCODE_PING]
        assert pings and pings[0] <= 4, f"no ping within 4 s: {opcodes}"
        # Never answered: closed about two seconds after the first unanswered ping.
        assert ended <= pings[0] + 2 + 3, f"still open after {ended:.1f}s: {opcodes}"
        assert opcodes[0][0] == 0x1  # the welcome came first
        sock.close()
    finally:
        stop_processes([web])
