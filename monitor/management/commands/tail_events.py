"""Print the event stream as JSON lines, resuming after reconnects (see monitor.live.tail).

The site is ``--url``, else ``EVENTSITE_URL``, else ``http://HOST:PORT`` when
``PORT`` is set, else the stack running from ``VAR_DIR`` (``make run``);
with none of them it stops with a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitor.live.tail import TailOptions, parse_positions, stream_url, tail
from monitor.management.running_stack import running_site_url


class Command(BaseCommand):
    help = (
        "Print events from a running eventsite as JSON lines on stdout "
        "(connection news and gap notices on stderr), resuming after reconnects."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            help="the site (default $EVENTSITE_URL, or http://$HOST:$PORT if PORT is set, "
            "or the site `make run` is serving from this checkout)",
        )
        parser.add_argument(
            "--token",
            default=os.getenv("EVENTSITE_TOKEN", ""),
            help="an API token from /settings/tokens/ (default $EVENTSITE_TOKEN, "
            "which keeps it out of the process list)",
        )
        parser.add_argument(
            "--type", dest="types", action="append", default=[], help="event type; repeatable"
        )
        parser.add_argument("--actor", help="only events by this actor (user id)")
        parser.add_argument("--subject", help="only events about this subject, e.g. posts/7")
        parser.add_argument("--text", help="only events whose data contains this text")
        start = parser.add_mutually_exclusive_group()
        start.add_argument("--history", type=int, default=0, help="begin with the N latest events")
        start.add_argument("--since", help="resume after these positions, e.g. 0:17,1:5")
        parser.add_argument(
            "--state",
            type=Path,
            help="keep positions in this file, and resume from it on the next run",
        )
        parser.add_argument("--count", type=int, help="exit after printing this many events")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["token"]:
            raise CommandError(
                "give a token: --token or $EVENTSITE_TOKEN (make one at /settings/tokens/)"
            )
        url = options["url"] or running_site_url()
        try:
            stream_url(url)
            since = parse_positions(options["since"]) if options["since"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be at least 1")
        code = tail(
            TailOptions(
                url=url,
                token=options["token"],
                types=[t for value in options["types"] for t in value.split(",") if t],
                actor=options["actor"],
                subject=options["subject"],
                text=options["text"],
                history=options["history"],
                since=since,
                state_file=options["state"],
                count=options["count"],
            )
        )
        if code:
            raise SystemExit(code)
