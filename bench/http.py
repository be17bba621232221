"""A minimal HTTP/1.1 client: one keep-alive connection, one request at a time.

The posting scenarios send thousands of small multipart requests from the
process that shares two cores with the server it measures; httpx costs
about 2 ms of CPU per post there, all of it taken from the server. This
client speaks only what those requests need: a request the caller has
already built as bytes, and a response whose body is framed by
``Content-Length``, by chunked transfer encoding, or by the end of the
connection. A response with ``Connection: close`` (or an HTTP/1.0 one
without keep-alive) leaves the connection unusable for another request;
the caller opens a new one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# Statuses whose responses never have a body (RFC 9112, section 6.3).
NO_BODY = frozenset({204, 304})


class ResponseError(Exception):
    """The server's response does not parse as HTTP/1.1."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


class HttpConnection:
    """One TCP connection to an HTTP/1.1 server, reused for request after request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._keep_alive = True

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @property
    def reusable(self) -> bool:
        """True if another request may be sent: the last response did not close the
        connection, and the server has not closed it since."""
        return self._keep_alive and not self._reader.at_eof() and not self._writer.is_closing()

    async def request(self, data: bytes) -> Response:
        """Send one whole request and read its whole response.

        Raises ``ConnectionError`` if the server closes the connection before the
        response ends, and :class:`ResponseError` if the response is malformed.
        A connection whose request failed or was cancelled must be closed.
        """
        # No drain: the server answers only once it has read all of it.
        self._writer.write(data)
        try:
            return await self._read_response()
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError(
                f"the server closed the connection {len(exc.partial)} bytes into a response"
                " part that was not complete"
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise ResponseError(f"a response line or head is too long: {exc}") from exc

    async def _read_response(self) -> Response:
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ResponseError(f"not an HTTP/1.x status line: {status_line[:200]!r}")
        status = int(rest[:3])
        headers = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ResponseError(f"not a header line: {line[:200]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self._keep_alive = "keep-alive" in connection
        else:
            self._keep_alive = "close" not in connection
        return Response(status, headers, await self._read_body(status, headers))

    async def _read_body(self, status: int, headers: dict[str, str]) -> bytes:
        if status in NO_BODY or 100 <= status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._read_chunked()
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ResponseError(f"bad Content-Length: {length[:50]!r}")
            return await self._reader.readexactly(int(length))
        self._keep_alive = False  # the body ends where the connection does
        return await self._reader.read()

    async def _read_chunked(self) -> bytes:
        reader = self._reader
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0], 16)
            except ValueError:
                raise ResponseError(f"bad chunk size line: {size_line[:50]!r}") from None
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise ResponseError("a chunk does not end with CRLF")
            chunks.append(chunk[:-2])
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailer fields, up to the empty line that ends the message
        return b"".join(chunks)

    def close(self) -> None:
        self._writer.close()
