"""The analytics page's filters: a range of UTC days, event types and sources.

Types and sources are any strings (analytics counts every CloudEvent, not
only the site's own types), at most as long as the columns that hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django.http import QueryDict

from monitor.models import EventMinuteCount

DEFAULT_DAYS = 30
MAX_DAYS = 366
# Values of one filter (types, or sources) at once.
MAX_CHOICES = 100
EARLIEST = date(1970, 1, 1)
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadFilter(ValueError):
    """A filter the page cannot use; the message says why, for the person who sent it."""


@dataclass(frozen=True)
class Filters:
    first: date
    last: date  # included
    types: tuple[str, ...] = ()  # empty: every type
    sources: tuple[str, ...] = ()  # empty: every source

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, UTC)

    @property
    def end(self) -> datetime:
        """The first moment after the range."""
        return datetime.combine(self.last + timedelta(days=1), time.min, UTC)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def query(self) -> str:
        """These filters as a query string."""
        pairs = [("from", self.first.isoformat()), ("to", self.last.isoformat())]
        pairs += [("type", name) for name in self.types]
        return urlencode(pairs + [("source", name) for name in self.sources])


def parse_filters(params: QueryDict, *, today: date) -> Filters:
    """The filters in a query string: ``from`` and ``to`` (YYYY-MM-DD, UTC days,
    both included; by default the 30 days up to ``today``) and any number of
    ``type`` and ``source`` (empty values are ignored). Raise BadFilter with a
    message for anything else."""
    last = _day(params, "to") or today
    first = _day(params, "from") or max(EARLIEST, last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise BadFilter(f"'from' ({first}) is after 'to' ({last}).")
    span = (last - first).days + 1
    if span > MAX_DAYS:
        raise BadFilter(f"The range has {span} days; at most {MAX_DAYS} are shown at once.")
    return Filters(first, last, _choices(params, "type"), _choices(params, "source"))


def _choices(params: QueryDict, name: str) -> tuple[str, ...]:
    """The distinct values of filter ``name``, sorted; each must fit its column."""
    chosen = sorted(set(filter(None, params.getlist(name))))
    if len(chosen) > MAX_CHOICES:
        raise BadFilter(f"At most {MAX_CHOICES} values of '{name}' are used at once.")
    longest: int = getattr(EventMinuteCount._meta.get_field(name), "max_length", None) or 0
    for value in chosen:
        if len(value) > longest:
            raise BadFilter(f"A '{name}' is at most {longest} characters: {value[:40]!r}...")
        if "\x00" in value:
            raise BadFilter(f"A '{name}' cannot hold a NUL character: {value[:40]!r}.")
    return tuple(chosen)


def _day(params: QueryDict, name: str) -> date | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        if not ISO_DATE.fullmatch(text):
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"'{name}' must be a date as YYYY-MM-DD, not {text[:40]!r}.") from None
    if not EARLIEST <= day < date.max:
        raise BadFilter(f"'{name}' must be between {EARLIEST} and {date.max - timedelta(1)}.")
    return day
