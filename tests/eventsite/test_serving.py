"""eventsite.serving and eventsite.sqlite3: how web requests use threads and the database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from channels.testing import HttpCommunicator
from django.core.signals import request_finished
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from eventsite.serving import PooledThreadsHandler, skip_twisted_form_parsing
from eventsite.sqlite3 import base as sqlite_backend
from monitor.events.after_response import call_after_response
from monitor.models import Post

pytestmark = pytest.mark.django_db(transaction=True)

# Writers taking turns is how eventsite.sqlite3 serialises SQLite's one writer;
# PostgreSQL runs concurrent transactions itself, with no turn to wait for.
sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="writers take turns only on SQLite (eventsite.sqlite3)"
)


def session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def test_requests_run_on_the_pool_and_keep_its_database_connection(user, settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    handler = PooledThreadsHandler(threads=1)
    cookie = session_cookie(user)
    seen: list[tuple[str, int]] = []

    def record(**kwargs: Any) -> None:
        seen.append((threading.current_thread().name, id(connection.connection)))

    request_finished.connect(record)
    try:

        async def get_three(path: str) -> list[dict]:
            responses = []
            for _ in range(3):
                communicator = HttpCommunicator(
                    handler, "GET", path, headers=[(b"host", b"testserver"), (b"cookie", cookie)]
                )
                responses.append(await communicator.get_response(timeout=10))
                await communicator.wait(timeout=10)  # the response is closed after sending
            return responses

        responses = asyncio.run(get_three("/"))
    finally:
        request_finished.disconnect(record)

    assert [response["status"] for response in responses] == [200, 200, 200]
    threads = {name for name, _ in seen}
    connections = {connection_id for _, connection_id in seen}
    assert len(seen) == 3 and len(threads) == 1 and threads.pop().startswith("http")
    assert len(connections) == 1  # the same connection served every request


journal: list[tuple[str, list[str]]] = []
sent: list[str] = []


def view_with_a_hand_over(request: HttpRequest) -> HttpResponse:
    call_after_response(lambda: journal.append(("hand-over", list(sent))))
    journal.append(("view", list(sent)))
    return HttpResponse("ok")


urlpatterns = [path("hand-over/", view_with_a_hand_over)]


@pytest.mark.urls(__name__)
def test_work_handed_over_runs_once_the_response_is_sent(settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    handler = PooledThreadsHandler(threads=1)
    journal.clear()
    sent.clear()
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/hand-over/",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message["type"])

    asyncio.run(handler(scope, receive, send))
    assert journal == [
        ("view", []),
        ("hand-over", ["http.response.start", "http.response.body"]),
    ]
    journal.clear()
    call_after_response(lambda: journal.append(("outside a request", [])))
    assert journal == [("outside a request", [])]


def test_it_turns_off_twisteds_second_parse_of_form_bodies() -> None:
    from daphne.http_protocol import WebRequest

    assert skip_twisted_form_parsing()
    assert skip_twisted_form_parsing()  # applying it twice wraps once
    assert getattr(WebRequest.__init__, "skips_form_parsing", False)
    assert not getattr(WebRequest.__init__.__wrapped__, "skips_form_parsing", False)


def in_thread(target: Any) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@sqlite_only
def test_a_writer_waits_for_the_transaction_in_progress_then_goes(user) -> None:
    events: list[tuple[str, float]] = []
    first_in = threading.Event()

    def first() -> None:
        with transaction.atomic():
            Post.objects.create(author=user, caption="first", photo="photos/a.jpg")
            first_in.set()
            time.sleep(0.3)
            events.append(("first commits", time.monotonic()))

    def second() -> None:
        first_in.wait(5)
        with transaction.atomic():
            events.append(("second begins", time.monotonic()))
            Post.objects.create(author=user, caption="second", photo="photos/b.jpg")

    threads = [in_thread(first), in_thread(second)]
    for thread in threads:
        thread.join(10)
    assert [name for name, _ in events] == ["first commits", "second begins"]
    assert sorted(Post.objects.values_list("caption", flat=True)) == ["first", "second"]


@sqlite_only
@pytest.mark.parametrize("ending", ["error", "close"])
def test_the_turn_is_given_back_however_a_transaction_ends(user, ending: str) -> None:
    def write_and_fail() -> None:
        if ending == "error":
            with pytest.raises(RuntimeError), transaction.atomic():
                Post.objects.create(author=user, caption="rolled back", photo="photos/c.jpg")
                raise RuntimeError("the view failed")
        else:
            transaction.set_autocommit(False)
            Post.objects.create(author=user, caption="never committed", photo="photos/d.jpg")
            # the connection closes mid-transaction (in_thread closes it)

    in_thread(write_and_fail).join(10)
    turn = sqlite_backend.turn_for(str(connection.settings_dict["NAME"]))
    assert turn.acquire(timeout=0), "the writer's turn was never given back"
    turn.release()
    assert not Post.objects.exists()


def test_writers_in_other_processes_wait_for_the_turn(tmp_path) -> None:
    database = str(tmp_path / "db.sqlite3")
    here = sqlite_backend.turn_for(database)
    script = (
        "import sys, time; from eventsite.sqlite3.base import turn_for;"
        f" turn = turn_for({database!r}); print('waiting', flush=True);"
        " started = time.monotonic(); got = turn.acquire(timeout=float(sys.argv[1]));"
        " print(got, round(time.monotonic() - started, 2))"
    )
    assert here.acquire(timeout=1)
    try:
        waited = subprocess.run(
            [sys.executable, "-c", script, "0.3"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert waited[1] == "False" and float(waited[2]) >= 0.3  # the turn is taken here
        other = subprocess.Popen(
            [sys.executable, "-c", script, "10"], stdout=subprocess.PIPE, text=True
        )
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "waiting"  # it is about to ask
        time.sleep(0.5)
    finally:
        here.release()
    got, after = other.communicate(timeout=20)[0].split()
    assert got == "True" and 0.3 <= float(after) < 5  # it went as soon as it was given back
