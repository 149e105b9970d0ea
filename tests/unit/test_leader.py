"""Leader election against a real Redis, with an injected monotonic clock and epoch source."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from scheduler.clock import next_epoch
from scheduler.leader import Leadership
from service.observability.scheduler_state import LEADER_KEY, read_lock

TTL_MS = 3000


class FakeClock:
    """A monotonic clock that moves only when told to (a paused process, seen from inside)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Epochs:
    """Counts the epochs drawn, so a test can see a standby draws none."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.drawn = 0

    def __call__(self) -> int:
        self.drawn += 1
        return next(self.counter)


@pytest.fixture
def client(redis_client):
    redis_client.flushdb()
    yield redis_client
    redis_client.flushdb()


def leadership(client, holder: str, clock=None, epochs=None) -> Leadership:
    return Leadership(client, holder, TTL_MS, epochs or Epochs(), clock or FakeClock())


def test_a_free_lock_is_taken_with_holder_epoch_and_the_configured_ttl(client):
    # Given no leader
    clock = leadership(client, "host-a:1")

    # When a clock acquires
    assert clock.acquire()

    # Then it leads, and health can read who holds the lock, on which epoch, for how long
    assert clock.is_leading() and clock.lease_valid()
    lock = read_lock(client)
    assert (lock["exists"], lock["holder"], lock["epoch"]) == (True, "host-a:1", 1)
    assert TTL_MS - 200 <= lock["ttl_ms"] <= TTL_MS


def test_a_standby_cannot_take_a_held_lock_and_draws_no_epoch(client):
    # Given a leader
    assert leadership(client, "host-a:1").acquire()
    epochs = Epochs()
    standby = leadership(client, "host-b:2", epochs=epochs)

    # When another clock tries, again and again
    attempts = [standby.acquire() for _ in range(5)]

    # Then it never leads, the holder is unchanged, and the epoch sequence is not burnt
    assert attempts == [False] * 5 and not standby.is_leading()
    assert read_lock(client)["holder"] == "host-a:1"
    assert epochs.drawn == 0


def test_of_many_clocks_racing_for_a_free_lock_exactly_one_wins(client):
    # Given eight clocks released at the same instant
    contenders = [leadership(client, f"host:{n}") for n in range(8)]
    start = threading.Barrier(len(contenders))
    won: list[bool] = [False] * len(contenders)

    def contend(n: int) -> None:
        start.wait()
        won[n] = contenders[n].acquire()

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(len(contenders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one leads, and it is the one the lock names
    assert won.count(True) == 1
    winner = contenders[won.index(True)]
    assert read_lock(client)["holder"] == winner.holder


def test_a_renewal_extends_the_lease_in_redis_and_on_the_monotonic_clock(client):
    # Given a leader two seconds into its three-second lease
    clock = FakeClock()
    leader = leadership(client, "host-a:1", clock=clock)
    assert leader.acquire()
    client.pexpire(LEADER_KEY, 1000)
    clock.advance(2.0)

    # When it renews
    assert leader.renew()

    # Then Redis gives it the full TTL again, and so does its own deadline
    assert read_lock(client)["ttl_ms"] > 2000
    clock.advance(2.5)
    assert leader.lease_valid()


def test_a_renewal_that_finds_another_holder_steps_down_at_once(client):
    # Given a leader whose lock expired while it was paused, and a successor holding it
    leader = leadership(client, "host-a:1")
    assert leader.acquire()
    client.delete(LEADER_KEY)
    successor = leadership(client, "host-b:2", epochs=Epochs())
    assert successor.acquire()

    # When the old leader wakes up and renews
    renewed = leader.renew()

    # Then it steps down, and the successor's lock is untouched (value and TTL)
    assert not renewed and not leader.is_leading() and not leader.lease_valid()
    assert leader.epoch is None
    lock = read_lock(client)
    assert lock["holder"] == "host-b:2" and lock["ttl_ms"] > TTL_MS - 500


def test_a_renewal_that_finds_the_lock_flushed_steps_down_and_can_acquire_again(client):
    # Given a leader
    epochs = Epochs()
    leader = leadership(client, "host-a:1", epochs=epochs)
    assert leader.acquire()

    # When Redis is flushed under it
    client.flushdb()

    # Then its renewal steps it down instead of recreating the key...
    assert not leader.renew() and not leader.is_leading()
    assert not client.exists(LEADER_KEY)
    # ...and its next acquisition is a new tenure with a new epoch
    assert leader.acquire()
    assert read_lock(client)["epoch"] == 2


def test_release_frees_the_lock_only_while_it_is_still_ours(client):
    # Given a leader that releases its lock
    first = leadership(client, "host-a:1")
    assert first.acquire()
    assert first.release()
    assert not client.exists(LEADER_KEY) and not first.is_leading()

    # And a leader whose lock was taken over while it was paused
    stale = leadership(client, "host-b:2")
    assert stale.acquire()
    client.delete(LEADER_KEY)
    successor = leadership(client, "host-c:3")
    assert successor.acquire()

    # When the stale one releases
    released = stale.release()

    # Then it does not delete its successor's lock
    assert not released
    assert read_lock(client)["holder"] == "host-c:3"


def test_a_paused_leader_knows_its_lease_ran_out_before_asking_redis(client):
    # Given a leader
    clock = FakeClock()
    leader = leadership(client, "host-a:1", clock=clock)
    assert leader.acquire()

    # When its monotonic clock says most of the TTL went by without a renewal (the process
    # was paused), although Redis has not been asked anything since
    clock.advance(TTL_MS / 1000 * 0.95)

    # Then it may not start a job any more, even though the key still names it
    assert not leader.lease_valid()
    assert read_lock(client)["holder"] == "host-a:1"
    # and once the whole TTL went by it no longer counts itself the leader
    clock.advance(TTL_MS / 1000 * 0.1)
    assert not leader.is_leading()


def test_the_lock_value_names_holder_and_epoch_and_a_unique_token(client):
    # Given two successive tenures of the same process
    leader = leadership(client, "host-a:1")
    assert leader.acquire()
    first = json.loads(client.get(LEADER_KEY))
    leader.release()
    assert leader.acquire()
    second = json.loads(client.get(LEADER_KEY))

    # Then each tenure is told apart by its epoch and its token
    assert (first["holder"], second["holder"]) == ("host-a:1", "host-a:1")
    assert second["epoch"] > first["epoch"]
    assert first["token"] != second["token"]


def test_epochs_come_from_postgresql_so_a_redis_flush_cannot_reuse_one(db, client):
    # Given a leader whose epoch comes from the database sequence
    leader = Leadership(client, "host-a:1", TTL_MS, next_epoch)
    assert leader.acquire()
    before = leader.epoch

    # When Redis is flushed and another clock takes the lock
    client.flushdb()
    successor = Leadership(client, "host-b:2", TTL_MS, next_epoch)
    assert successor.acquire()

    # Then the new epoch is higher: fencing still orders the two tenures
    assert successor.epoch > before
    assert read_lock(client)["epoch"] == successor.epoch


def test_a_clock_that_loses_the_lock_while_drawing_its_epoch_does_not_lead(client):
    # Given a clock that wins the key but is paused past its TTL while drawing its epoch,
    # during which another clock takes the lock
    successor = leadership(client, "host-b:2")

    def slow_epoch() -> int:
        client.delete(LEADER_KEY)
        assert successor.acquire()
        return 99

    late = Leadership(client, "host-a:1", TTL_MS, slow_epoch, FakeClock())

    # When its acquisition completes
    acquired = late.acquire()

    # Then it does not lead, and the successor's lock is untouched
    assert not acquired and not late.is_leading() and late.epoch is None
    assert read_lock(client)["holder"] == "host-b:2"


def test_a_lock_won_while_postgresql_is_down_is_given_back(client):
    # Given a clock whose epoch source fails (PostgreSQL unreachable)
    def unreachable() -> int:
        raise ConnectionError("postgresql is down")

    clock = Leadership(client, "host-a:1", TTL_MS, unreachable, FakeClock())

    # When it tries to acquire
    with pytest.raises(ConnectionError):
        clock.acquire()

    # Then it does not lead, and the lock is free for a clock that can reach the database
    assert not clock.is_leading()
    assert not client.exists(LEADER_KEY)


def test_every_job_name_health_reads_is_a_scheduled_job():
    # Given the job names health reads (service side) and the clock's schedule (scheduler side)
    from scheduler.jobs import SCHEDULE
    from service.observability.scheduler_state import JOB_NAMES

    # Then they name the same jobs, in the same order
    assert tuple(SCHEDULE) == JOB_NAMES


def test_a_clock_is_listed_before_its_first_election_takes_the_lock(client, settings):
    # Given a clock whose first election round takes the free lock
    from scheduler.clock import Clock
    from service.observability import clocks

    listed_when_electing: list[list[str]] = []

    class Watched(Leadership):
        def acquire(self) -> bool:
            listed_when_electing.append([c["holder"] for c in clocks.live_clocks(client)])
            return super().acquire()

    class StopAfterOneRound:
        def wait(self, timeout: float) -> bool:
            return True

    watched = Watched(client, "host-a:1", TTL_MS, Epochs(), FakeClock())
    clock = Clock(settings, client, watched, [], StopAfterOneRound())  # type: ignore[arg-type]

    # When it runs its one round
    assert clock.run() == 0

    # Then health could already list it when the lock became its own: never a lock held by
    # a clock nobody lists
    assert listed_when_electing == [["host-a:1"]]


def test_a_leader_postgresql_no_longer_answers_gives_the_lock_up(client, settings, monkeypatch):
    # Given a clock leading, then cut off from PostgreSQL (not from Redis)
    from scheduler import clock as clock_module
    from scheduler.clock import Clock

    class NeverStops:
        def wait(self, timeout: float) -> bool:
            return False

    clock = Clock(
        settings,
        client,
        leadership(client, "host-a:1"),
        [],
        NeverStops(),  # type: ignore[arg-type]
    )
    clock.scheduler.start(paused=True)
    clock._elect()
    assert clock.leading and read_lock(client)["holder"] == "host-a:1"
    answers = [False, False, True, False, False, False]
    monkeypatch.setattr(clock, "database_answers", lambda: answers.pop(0))

    # When rounds pass: two unanswered, one answered (a restart of a few seconds), then three
    for _ in range(5):
        clock._elect()
        # Then it keeps the lead while the database answers now and then
        assert clock.leading and read_lock(client)["exists"]
    clock._elect()

    # Then, at the third unanswered round in a row, it gives the lock up for a standby that
    # reaches the database (before: it renewed in Redis for as long as Redis answered)
    assert clock.leading is False and not read_lock(client)["exists"]
    assert clock_module.DATABASE_ROUNDS == 3
    clock.scheduler.shutdown(wait=False)
