"""The per-connection message rate (a token bucket), with a clock the test moves."""

from __future__ import annotations

from monitor.live.message_rate import MessageRate, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_takes_a_burst_then_drops_telling_once() -> None:
    clock = Clock()
    rate = MessageRate(per_second=10, burst=5, clock=clock)
    assert [rate.judge() for _ in range(5)] == [Verdict.TAKE] * 5
    assert rate.judge() is Verdict.DROP_AND_TELL
    assert rate.judge() is Verdict.DROP


def test_the_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    rate = MessageRate(per_second=10, burst=5, clock=clock)
    for _ in range(5):
        rate.judge()
    clock.now += 0.35  # three and a half messages' worth
    assert [rate.judge() for _ in range(3)] == [Verdict.TAKE] * 3
    assert rate.judge() is Verdict.DROP_AND_TELL


def test_a_client_slightly_over_the_rate_is_never_closed() -> None:
    clock = Clock()
    rate = MessageRate(per_second=10, burst=5, clock=clock)
    verdicts = []
    for _ in range(600):  # 12 a second for 50 seconds
        clock.now += 1 / 12
        verdicts.append(rate.judge())
    assert Verdict.CLOSE not in verdicts
    assert verdicts.count(Verdict.TAKE) >= 490


def test_a_flood_is_closed_once_and_then_ignored() -> None:
    clock = Clock()
    rate = MessageRate(per_second=10, burst=5, clock=clock)
    verdicts = [rate.judge() for _ in range(20)]
    assert verdicts.count(Verdict.CLOSE) == 1
    assert verdicts.index(Verdict.CLOSE) == 5 + 5  # the burst, then burst more dropped
    assert set(verdicts[11:]) == {Verdict.DROP}


def test_a_rate_of_zero_turns_the_limit_off() -> None:
    rate = MessageRate(per_second=0, burst=0, clock=Clock())
    assert {rate.judge() for _ in range(1000)} == {Verdict.TAKE}
