"""Call slots: a worker process's SEND_CONCURRENCY calls, shared fairly by its batches."""

from __future__ import annotations

import threading
import time

import pytest

from service.infra.call_slots import CallSlots


def test_a_lone_batch_takes_every_free_slot_but_no_more_than_it_wants():
    slots = CallSlots(8)
    with slots.lease() as lease:
        assert lease.take(20, timeout_s=0) == 8
        assert slots.free == 0
        lease.give_back()
        assert lease.take(3, timeout_s=0) == 3
        assert slots.free == 5


def test_batches_sending_at_once_take_a_fair_share_each():
    # Given two batches sending in one process of 8 slots
    slots = CallSlots(8)
    with slots.lease() as first, slots.lease() as second:
        # When each takes a window
        taken = first.take(100, timeout_s=0), second.take(100, timeout_s=0)
        # Then each holds half of the slots, and all are in use
        assert taken == (4, 4) and slots.free == 0


def test_a_window_waits_for_a_slot_and_gets_one_as_soon_as_a_window_ends():
    # Given a batch holding every slot, and a second batch that wants a window
    slots = CallSlots(2)
    taken: list[int] = []

    def second_batch() -> None:
        with slots.lease() as lease:
            taken.append(lease.take(5, timeout_s=5))

    with slots.lease() as busy:
        assert busy.take(2, timeout_s=0) == 2
        waiter = threading.Thread(target=second_batch)
        waiter.start()
        time.sleep(0.2)
        assert not taken  # it waits

        # When the busy batch's window ends
        busy.give_back()
        waiter.join(timeout=5)

    # Then the waiting batch got its fair share at once
    assert taken == [1]


def test_no_slot_free_in_time_gives_none():
    slots = CallSlots(1)
    with slots.lease() as busy, slots.lease() as late:
        busy.take(1, timeout_s=0)
        began = time.monotonic()
        assert late.take(1, timeout_s=0.2) == 0
        assert 0.15 < time.monotonic() - began < 2


def test_slots_held_by_a_batch_that_fails_are_free_again():
    # Given a batch that holds slots when an exception interrupts it
    slots = CallSlots(4)
    with pytest.raises(RuntimeError):
        with slots.lease() as lease:
            lease.take(4, timeout_s=0)
            raise RuntimeError("interrupted mid-window")
    # Then every slot is free and no batch counts for the fair share any more
    assert (slots.free, slots.batches) == (4, 0)
