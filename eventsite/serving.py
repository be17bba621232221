"""How the site's HTTP requests are served under daphne.

:class:`PooledThreadsHandler` runs Django's synchronous request handling in
a pool of long-lived threads, with one hand-over per request.

Twisted, under daphne, parses every ``multipart/form-data`` POST body into
``request.args`` with the standard library's e-mail parser before daphne
hands the raw body to Django, which parses it again. Daphne never reads
``request.args``, and the first parse costs about a quarter of the CPU of
a photo post, so it is switched off (Twisted's ``parsePOSTFormSubmission``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

from monitor.events.after_response import AfterResponse

logger = logging.getLogger(__name__)


def skip_twisted_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; False if Twisted cannot."""
    try:
        from daphne.http_protocol import WebRequest
        from twisted.web.http import Request
    except ImportError:
        return False  # not running under daphne
    if "parsePOSTFormSubmission" not in inspect.signature(Request.__init__).parameters:
        logger.warning("this Twisted cannot skip form parsing; posts cost more CPU")
        return False
    original = WebRequest.__init__
    if getattr(original, "skips_form_parsing", False):
        return True

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original(self, *args, **kwargs)

    __init__.skips_form_parsing = True  # type: ignore[attr-defined]  # a marker on the function
    WebRequest.__init__ = __init__
    return True


class PooledThreadsHandler(ASGIHandler):
    """Django's ASGI handler, with each request's synchronous part in one pooled thread.

    Django's own handler runs the views and middleware of a synchronous site
    through about five hand-overs between the event loop and a thread per
    request (the request signal, the middleware chain, back to the loop for
    the view, the view, closing the response), starts a new thread for
    every request, and so opens a new database connection for every request
    (connections belong to the thread). Here the body is read and the
    response sent on the event loop as before, and everything between runs
    in one call on a pool of long-lived threads: Django's synchronous
    request path, the same one WSGI servers use. Each pool thread keeps its
    database connection for ``DATABASE_CONN_MAX_AGE`` seconds. An async view
    still works: Django runs it on the event loop and waits for it in the
    thread. Work handed to :func:`monitor.events.after_response.call_after_response`
    runs once the response is sent.
    """

    def __init__(self, threads: int) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="http")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP connections, not {scope['type']}")
        # Anything Django still hands to a thread-sensitive thread (the file
        # iterator of a streamed response) gets one per request, as before.
        async with ThreadSensitiveContext():
            await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        try:
            response, after = await loop.run_in_executor(
                self._pool, self._respond, scope, body_file
            )
            try:
                await self.send_response(response, send)
            finally:
                after.run()
                # Fires request_finished, which keeps or closes the thread's connection.
                await loop.run_in_executor(self._pool, response.close)
        finally:
            body_file.close()

    def _respond(
        self, scope: dict[str, Any], body_file: Any
    ) -> tuple[HttpResponseBase, AfterResponse]:
        after = AfterResponse()
        try:
            with after.collecting():
                set_script_prefix(get_script_prefix(scope))
                signals.request_started.send(sender=self.__class__, scope=scope)
                request, error_response = self.create_request(scope, body_file)
                if request is None:
                    assert error_response is not None
                    return error_response, after
                response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]  # not in stubs
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
            return response, after
        except BaseException:
            # No response will be sent: what was handed over runs now.
            after.run()
            raise
