"""Uploaded photos, served from MEDIA_ROOT by the site itself.

Only the embedded default serves them (``SERVE_FILES``); a deployment's
reverse proxy serves MEDIA_ROOT directly and should send the same headers
(README, "Security"). Stored photos are re-encoded images with random names
(monitor/feed/images.py, monitor/models/social.py), so anything else under MEDIA_ROOT,
whatever its name, is not served: a browser must never get a page or a
script from there.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.utils.http import http_date

MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}

MEDIA_HEADERS = {
    # The browser must take the file for the image its type says, and even if
    # opened on its own it may run nothing and load nothing.
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    # A stored file never changes (a new photo gets a new random name), so a
    # browser may keep it for a year without asking again. "private": a
    # deleted photo should not live on in shared caches.
    "Cache-Control": "private, max-age=31536000, immutable",
}


def media_file(root: Path, name: str) -> Path | None:
    """The regular file ``name`` (a URL path, ``/``-separated) names under ``root``.

    None unless it has an allowed image extension and lies inside ``root``
    once symbolic links are followed. Empty, ``.`` and ``..`` segments,
    hidden names and backslashes are refused before the file system is
    asked, so no spelling of a path can leave ``root``.
    """
    parts = name.split("/")
    if any(not part or part.startswith(".") or "\\" in part or "\0" in part for part in parts):
        return None
    root = root.resolve()
    try:
        path = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return None
    if not path.is_relative_to(root) or path.suffix.lower() not in MEDIA_TYPES:
        return None
    return path if path.is_file() else None


def serve_media(request: HttpRequest, path: str) -> HttpResponseBase:
    """Answer GET or HEAD for an uploaded image under MEDIA_ROOT.

    404 for anything that ``media_file`` refuses, 405 for other methods.
    Honours If-None-Match (the ETag) and If-Modified-Since with a 304.
    Every answer from here carries ``MEDIA_HEADERS``.
    """
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(
            ["GET", "HEAD"], "Media files answer GET and HEAD only.", content_type="text/plain"
        )
    file = media_file(Path(settings.MEDIA_ROOT), path)
    if file is None:
        raise Http404("No such media file.")
    try:
        handle = file.open("rb")
    except OSError:  # deleted since it was found
        raise Http404("No such media file.") from None
    stat = os.fstat(handle.fileno())
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    conditional = get_conditional_response(request, etag=etag, last_modified=int(stat.st_mtime))
    content_type = MEDIA_TYPES[file.suffix.lower()]
    response: HttpResponseBase
    if conditional is not None:
        handle.close()
        response = conditional
    elif request.method == "HEAD":
        handle.close()
        response = HttpResponse(content_type=content_type)
        response.headers["Content-Length"] = str(stat.st_size)
    else:
        response = FileResponse(handle, content_type=content_type)
    response.headers["ETag"] = etag
    response.headers["Last-Modified"] = http_date(stat.st_mtime)
    for header, value in MEDIA_HEADERS.items():
        response.headers[header] = value
    return response
