"""``python -m bench.receive_cost``: what telling records apart costs per record.

Every consumer reads records through :func:`monitor.events.received.receive`
(parse any CloudEvent, verify the site's signature) and the live reader also
builds each item (:func:`monitor.live.items.shown`). This measures both, per
record, for the site's signed events, another service's CloudEvents and raw
records, against the strict parse every consumer ran before (``parse_record``
of a site event, and for the live reader ``parse_record`` plus
``encode_item``), measured in the same run: the ratios hold across machines,
the microseconds do not. Runs in a few seconds, in this process only.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROUNDS = 7
RECORDS = 4000


@dataclass
class Record:
    """What aiokafka's ConsumerRecord gives a consumer, for :func:`receive`."""

    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "user-events"
    partition: int = 0
    offset: int = 0
    timestamp: int = 1_764_000_000_000
    key: bytes | None = b"7"


def per_record_us(work: Callable[[Record], Any], records: list[Record]) -> float:
    """The median over ROUNDS of the time per record, in microseconds."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for record in records:
            work(record)
        times.append((time.perf_counter() - started) / len(records) * 1e6)
    return statistics.median(times)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
    import django

    django.setup()
    from monitor.events import signing
    from monitor.events.received import receive
    from monitor.events.schema import parse_record
    from monitor.live.items import shown
    from monitor.live.protocol import encode_item

    from .source import event_bytes

    site = [event_bytes(n)[1] for n in range(RECORDS)]
    signed = [Record(value, [signing.sign(value)]) for value in site]
    unsigned = [Record(value) for value in site]
    foreign = [
        Record(
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": f"o-{n}",
                    "source": "/shop",
                    "type": "order.placed",
                    "data": {"order": n, "lines": [{"sku": "A-1", "count": 2}]},
                }
            ).encode()
        )
        for n in range(RECORDS)
    ]
    raw = [Record(f"User signed up {n}".encode()) for n in range(RECORDS)]

    def old_live(record: Record) -> str:
        assert record.value is not None
        parse_record(record.value)
        return encode_item(record.topic, record.partition, record.offset, record.value)

    baseline = per_record_us(lambda r: parse_record(r.value), signed)
    live_baseline = per_record_us(old_live, signed)
    rows = [
        ("consumers: strict parse of a site event (before)", baseline, baseline),
        ("consumers: receive, the site's signed event", per_record_us(receive, signed), baseline),
        (
            "consumers: receive, an unsigned site-type event",
            per_record_us(receive, unsigned),
            baseline,
        ),
        (
            "consumers: receive, another service's CloudEvent",
            per_record_us(receive, foreign),
            baseline,
        ),
        ("consumers: receive, a raw record", per_record_us(receive, raw), baseline),
        ("live reader: parse + encode a site event (before)", live_baseline, live_baseline),
        (
            "live reader: receive + item, signed event",
            per_record_us(lambda r: shown(receive(r)), signed),
            live_baseline,
        ),
        (
            "live reader: receive + item, raw record",
            per_record_us(lambda r: shown(receive(r)), raw),
            live_baseline,
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'per record':<{width}}  {'µs':>7}  {'× before':>8}")
    for name, micros, against in rows:
        print(f"{name:<{width}}  {micros:7.2f}  {micros / against:8.2f}")
    print(json.dumps({name: round(micros, 3) for name, micros, _ in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
