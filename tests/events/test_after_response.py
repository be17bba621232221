"""The after-response hook: work handed over while a response is prepared runs
later, in order, each piece once; outside a collector it runs at once."""

from __future__ import annotations

import threading

from monitor.events.after_response import AfterResponse, call_after_response


def test_it_calls_at_once_when_nothing_collects() -> None:
    calls: list[str] = []
    call_after_response(lambda: calls.append("now"))
    assert calls == ["now"]


def test_it_runs_the_collected_callbacks_in_order_once() -> None:
    calls: list[int] = []
    after = AfterResponse()
    with after.collecting():
        for n in range(3):
            call_after_response(lambda n=n: calls.append(n))  # type: ignore[misc]
    assert calls == []
    after.run()
    assert calls == [0, 1, 2]
    after.run()
    assert calls == [0, 1, 2]


def test_a_failing_callback_does_not_stop_the_others(caplog) -> None:
    calls: list[str] = []
    after = AfterResponse()

    def fail() -> None:
        raise ValueError("broken hand-over")

    with after.collecting():
        call_after_response(fail)
        call_after_response(lambda: calls.append("second"))
    after.run()
    assert calls == ["second"]
    assert "after-response callback failed" in caplog.text


def test_collecting_belongs_to_one_thread_and_ends_with_its_block() -> None:
    calls: list[str] = []
    after = AfterResponse()
    with after.collecting():
        other = threading.Thread(target=call_after_response, args=(lambda: calls.append("other"),))
        other.start()
        other.join()
        assert calls == ["other"]  # another thread is not collected
    call_after_response(lambda: calls.append("after the block"))
    assert calls == ["other", "after the block"]
    after.run()
    assert calls == ["other", "after the block"]


def test_an_inner_collector_gives_way_to_the_outer_one() -> None:
    calls: list[str] = []
    outer, inner = AfterResponse(), AfterResponse()
    with outer.collecting():
        with inner.collecting():
            call_after_response(lambda: calls.append("inner"))
        call_after_response(lambda: calls.append("outer"))
    inner.run()
    assert calls == ["inner"]
    outer.run()
    assert calls == ["inner", "outer"]
