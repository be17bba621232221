"""The embedded broker's lives: a roll-over continues the positions exactly; a
new start goes on from where the last life ended, exactly if it said so, and
far past it, uncounted, if it did not (a crash)."""

from __future__ import annotations

import pytest

from monitor.events.epochs import (
    UNCLEAN_MARGIN,
    begin_after_restart,
    begin_epoch,
    epoch_of,
    follows,
    record_ends,
)

pytestmark = pytest.mark.django_db

TOPIC = "user-events"


def test_a_cluster_without_an_epoch_has_positions_equal_to_offsets() -> None:
    epoch = epoch_of("some-apache-kafka-cluster")
    assert epoch.bases == {}
    assert epoch.counted_exactly(TOPIC, 0, 0)


def test_roll_overs_add_the_old_ends_to_the_bases() -> None:
    assert begin_after_restart("first") == {}
    assert begin_epoch("second", "first", {TOPIC: {0: 100, 1: 40}}) == {TOPIC: {0: 100, 1: 40}}
    assert begin_epoch("third", "second", {TOPIC: {0: 7, 1: 0}}) == {TOPIC: {0: 107, 1: 40}}
    assert follows("third", "second") and not follows("third", "first")
    assert epoch_of("third").bases == {TOPIC: {0: 107, 1: 40}}
    assert epoch_of("third").counted_exactly(TOPIC, 0, 0)


def test_a_new_start_after_a_clean_end_goes_on_exactly() -> None:
    begin_after_restart("first")
    begin_epoch("second", "first", {TOPIC: {0: 100}})
    record_ends("second", {TOPIC: {0: 30}}, final=True)
    assert begin_after_restart("third") == {TOPIC: {0: 130}}
    assert not follows("third", "second")  # not a roll-over: the third began empty
    assert epoch_of("third").counted_exactly(TOPIC, 0, 5)


def test_a_new_start_after_a_crash_goes_far_past_it_uncounted() -> None:
    begin_after_restart("first")
    record_ends("first", {TOPIC: {0: 30, 1: 2}}, final=False)  # as last seen, then a crash
    bases = begin_after_restart("second")
    assert bases == {TOPIC: {0: 30 + UNCLEAN_MARGIN, 1: 2 + UNCLEAN_MARGIN}}
    epoch = epoch_of("second")
    assert not epoch.counted_exactly(TOPIC, 0, 31)
    assert epoch.counted_exactly(TOPIC, 0, 30 + UNCLEAN_MARGIN)
    # A roll-over later keeps what is not counted, and counts what it adds.
    begin_epoch("third", "second", {TOPIC: {0: 10, 1: 0}})
    third = epoch_of("third")
    assert third.bases[TOPIC][0] == 40 + UNCLEAN_MARGIN
    assert not third.counted_exactly(TOPIC, 0, 31)
    assert third.counted_exactly(TOPIC, 0, 35 + UNCLEAN_MARGIN)
