"""monitor.live.reader_watch: how far the live reader is behind, and when it is in trouble.

Unit tests on a real LiveLine, with the broker's answers and the clock given
by the test."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.live.line import LiveLine
from monitor.live.reader_keeper import skipped_for
from monitor.live.reader_watch import ReaderWatch, Trouble

BOUND = 10.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reader_at(ends: dict[int, int]) -> tuple[LiveLine, ReaderWatch, Clock]:
    line = LiveLine(100)
    for partition, offset in ends.items():
        line.begin(partition, offset)
    clock = Clock()
    return line, ReaderWatch(line, max_behind_seconds=BOUND, clock=clock), clock


def read(line: LiveLine, watch: ReaderWatch, partition: int, count: int) -> None:
    """The reader hands ``count`` more records of ``partition`` over."""
    for _ in range(count):
        line.received(partition, line.end(partition), "{}", NOW)
    watch.advanced()


def test_a_reader_level_with_the_broker_is_ok_however_long_the_topic_is_idle() -> None:
    line, watch, clock = reader_at({0: 5, 1: 7})
    for _ in range(10):
        clock.now += 3
        watch.observed({0: 5, 1: 7})

    health = watch.health()

    assert health.ok and health.trouble is None and health.reason is None
    assert (health.behind, health.seconds_behind, health.seconds_since_advance) == (0, 0.0, 0.0)


def test_a_burst_read_within_the_bound_is_no_trouble_however_large() -> None:
    line, watch, clock = reader_at({0: 0})
    watch.observed({0: 0})
    clock.now += 2
    watch.observed({0: 50_000})
    assert watch.health().behind == 50_000 and watch.health().ok

    clock.now += 1
    read(line, watch, 0, 30_000)
    clock.now += 1
    watch.observed({0: 50_000})
    assert watch.health().ok and watch.health().behind == 20_000

    read(line, watch, 0, 20_000)
    assert watch.health().seconds_behind == 0.0


def test_a_reader_that_stops_advancing_while_records_wait_has_stalled() -> None:
    line, watch, clock = reader_at({0: 3})
    watch.observed({0: 3})
    clock.now += 2
    watch.observed({0: 8})
    clock.now += 8
    watch.observed({0: 9})
    assert watch.health().ok  # 8 s: within the bound

    clock.now += 4
    health = watch.health()

    # Counted from when it was last seen level (a check before the records came).
    assert health.trouble is Trouble.STALLED and not health.ok
    assert health.behind == 6
    assert (health.seconds_behind, health.seconds_since_advance) == (12.0, 14.0)
    assert health.reason == "the live reader has not advanced for 14 s while 6 events wait"
    assert health.as_json() == {
        "ok": False,
        "trouble": "stalled",
        "behind": 6,
        "seconds_behind": 12.0,
        "seconds_since_advance": 14.0,
        "reason": "the live reader has not advanced for 14 s while 6 events wait",
    }


def test_a_reader_that_reads_slower_than_the_topic_grows_falls_behind() -> None:
    line, watch, clock = reader_at({0: 0})
    watch.observed({0: 0})
    for second in range(1, 25):
        clock.now += 1
        read(line, watch, 0, 50)  # it advances all the time...
        watch.observed({0: 100 * second})  # ...but the topic grows twice as fast
        if second == 20:
            # It has read what the topic held 10 s ago, not what it held 9 s ago.
            assert watch.health().seconds_behind == 9.0 and watch.health().ok

    health = watch.health()

    assert health.trouble is Trouble.BEHIND
    assert health.behind == 2400 - 1200
    assert health.seconds_since_advance == 0.0
    assert health.seconds_behind == 11.0
    assert health.reason is not None and "behind the topic's end" in health.reason


def test_a_broker_that_does_not_answer_for_the_bound_is_trouble_and_behind_is_unknown() -> None:
    line, watch, clock = reader_at({0: 4})
    watch.observed({0: 4})
    for _ in range(3):
        clock.now += 3
        watch.observed(None)
    assert watch.health().ok  # 9 s without an answer: within the bound

    clock.now += 3
    watch.observed(None)
    health = watch.health()

    assert health.trouble is Trouble.SILENT and health.behind is None
    assert health.reason == "the broker has not answered the live reader for 12 s"

    watch.observed({0: 4})  # it answers again
    assert watch.health().ok


def test_an_end_reported_below_the_line_counts_as_level_not_negative() -> None:
    line, watch, clock = reader_at({0: 8, 1: 3})
    clock.now += 30
    watch.observed({0: 1, 1: 3})  # the embedded broker, after batched writes

    health = watch.health()

    assert health.ok and health.behind == 0


def test_a_new_cluster_starts_the_watch_over() -> None:
    line, watch, clock = reader_at({0: 3})
    watch.observed({0: 9})
    clock.now += 20
    assert watch.health().trouble is Trouble.STALLED

    line.restart()
    line.begin(0, 0)
    watch.reset()
    watch.observed({0: 0})

    assert watch.health().ok and watch.checked


def test_a_skip_counts_for_each_client_only_what_it_did_not_get() -> None:
    line = {0: 10, 1: 4, 2: 7}
    start_at = {0: 25, 1: 4, 2: 9}

    assert skipped_for(line, line, start_at) == 15 + 0 + 2
    # A client handed over by a replay that had read further on partition 0.
    assert skipped_for(line, {0: 20, 1: 4, 2: 7}, start_at) == 5 + 0 + 2
    # A replay handing over below the skip, with no position on partition 1.
    assert skipped_for({0: 12, 2: 9}, {0: 12, 2: 9}, start_at) == 13
