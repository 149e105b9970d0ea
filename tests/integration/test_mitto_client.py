"""`MittoClient` against the real simulator over HTTP: every answer is an outcome."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from astronote.sim import SimServer, start_background
from service.provider import MittoClient, Outcome, Sms

KEY = "sim-key"
NUMBERS = [f"+3069100000{i:02d}" for i in range(10)]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = start_background(port=0, api_key=KEY, dlr_enabled=False)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(sim: SimServer) -> MittoClient:
    return MittoClient(sim.url, KEY, connect_timeout_s=2, read_timeout_s=5, pool_size=2)


def recorded_ids(sim: SimServer, reference: str) -> dict[str, str]:
    """What the provider really accepted for a call: its message id per number."""
    return {m["to"]: m["id"] for m in sim.simulator.messages(reference=reference)}


def test_a_shuffled_bulk_answer_gives_each_recipient_its_own_message_id(
    sim: SimServer, client: MittoClient
) -> None:
    # Given a provider that answers the next bulk call in another order than the request's
    sim.simulator.update_config({"next": ["shuffled"]})

    # When a batch is sent in one bulk call
    results = client.send_bulk("Shop", NUMBERS, "Sale", "batch:1:abc", None)

    # Then every recipient is accepted with the id the provider recorded for its own number
    recorded = recorded_ids(sim, "batch:1:abc")
    assert len(recorded) == len(NUMBERS)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * len(NUMBERS)
    assert [r.provider_id for r in results] == [recorded[number] for number in NUMBERS]


def test_a_shuffled_bulk_answer_with_rejections_fails_only_the_rejected(
    sim: SimServer, client: MittoClient
) -> None:
    # Given a provider rejecting two numbers and answering out of order
    sim.simulator.update_config({"shuffle_bulk": True, "reject_prefixes": [NUMBERS[3], NUMBERS[7]]})

    # When the batch is sent
    results = client.send_bulk("Shop", NUMBERS, "Sale", "batch:2:abc", None)

    # Then exactly those two are rejected, and the others carry their own ids
    rejected = [n for n, r in zip(NUMBERS, results) if r.outcome is Outcome.REJECTED]
    assert rejected == [NUMBERS[3], NUMBERS[7]]
    recorded = recorded_ids(sim, "batch:2:abc")
    assert {
        n: r.provider_id for n, r in zip(NUMBERS, results) if r.outcome is Outcome.ACCEPTED
    } == recorded


@pytest.mark.parametrize(
    "answer",
    ["answer_array", "answer_string", "answer_number", "answer_no_messages", "answer_no_ids"],
)
def test_an_accepted_call_answered_in_a_wrong_shape_is_unknown(
    sim: SimServer, client: MittoClient, answer: str
) -> None:
    # Given a provider that accepts the next calls but answers them in a wrong shape
    sim.simulator.update_config({"next": [answer, answer]})

    # When a bulk call and a single call are made
    many = client.send_bulk("Shop", NUMBERS[:3], "Sale", "batch:3:abc", None)
    one = client.send_one("Shop", Sms(NUMBERS[5], "Hi Ann", "42"), None)

    # Then every recipient is unknown, not an exception: the provider really has them all
    assert [r.outcome for r in many] == [Outcome.UNKNOWN] * 3
    assert one.outcome is Outcome.UNKNOWN
    assert len(recorded_ids(sim, "batch:3:abc")) == 3 and recorded_ids(sim, "42")


def test_a_connection_reset_after_accepting_is_unknown(sim: SimServer, client: MittoClient) -> None:
    # Given a provider that records the next calls as sent, then resets without answering
    sim.simulator.update_config({"next": ["reset", "reset"]})

    # When a bulk call and a single call are made
    many = client.send_bulk("Shop", NUMBERS[:4], "Sale", "batch:4:abc", None)
    one = client.send_one("Shop", Sms(NUMBERS[6], "Hi Bob", "43"), None)

    # Then their outcome is unknown (never resent blindly), though the provider has them
    assert [r.outcome for r in many] == [Outcome.UNKNOWN] * 4
    assert one.outcome is Outcome.UNKNOWN
    assert len(recorded_ids(sim, "batch:4:abc")) == 4 and recorded_ids(sim, "43")

    # And the client's pool recovers: the next call is answered normally
    after = client.send_one("Shop", Sms(NUMBERS[7], "Hi Cy", "44"), None)
    assert after.outcome is Outcome.ACCEPTED
    assert after.provider_id == recorded_ids(sim, "44")[NUMBERS[7]]


def test_a_throttled_call_is_not_sent_and_carries_retry_after(
    sim: SimServer, client: MittoClient
) -> None:
    sim.simulator.update_config({"next": ["429"], "retry_after_s": 2})
    results = client.send_bulk("Shop", NUMBERS[:2], "Sale", "batch:5:abc", None)
    assert [(r.outcome, r.retry_after_s) for r in results] == [(Outcome.NOT_SENT, 2.0)] * 2
    assert recorded_ids(sim, "batch:5:abc") == {}


def test_an_answer_dripping_byte_by_byte_is_cut_at_the_calls_deadline(sim: SimServer) -> None:
    # Given a client whose reads time out after 0.6 s, and a provider that accepts the next
    # calls and answers one byte every 0.2 s (each read quick, the answer some 20 s long)
    client = MittoClient(sim.url, KEY, connect_timeout_s=0.4, read_timeout_s=0.6, pool_size=2)
    sim.simulator.update_config({"next": ["drip", "drip"], "drip_s": 0.2})

    # When a single call and a bulk call are made
    began = time.monotonic()
    one = client.send_one("Shop", Sms(NUMBERS[0], "Hi Al", "51"), None)
    first = time.monotonic() - began
    many = client.send_bulk("Shop", NUMBERS[1:4], "Sale", "batch:5:abc", None)
    second = time.monotonic() - began - first

    # Then each ends at its deadline (connect and read timeouts: 1 s), of unknown outcome
    # (the provider has the messages), not when the answer would have ended
    assert one.outcome is Outcome.UNKNOWN and "no whole answer within 1 s" in (one.reason or "")
    assert [r.outcome for r in many] == [Outcome.UNKNOWN] * 3
    assert 0.9 <= first < 1.6 and 0.9 <= second < 1.6, (first, second)
    assert recorded_ids(sim, "51") and len(recorded_ids(sim, "batch:5:abc")) == 3

    # And the client goes on: the next call is answered normally, and is not cut later
    after = client.send_one("Shop", Sms(NUMBERS[5], "Hi Bo", "52"), None)
    assert after.outcome is Outcome.ACCEPTED
    time.sleep(1.2)
    again = client.send_one("Shop", Sms(NUMBERS[6], "Hi Cy", "53"), None)
    assert again.outcome is Outcome.ACCEPTED


def test_a_connect_that_fails_after_the_deadline_is_still_not_sent(sim: SimServer, monkeypatch):
    # Given a name lookup and connect slower than the whole call's deadline (0.4 s), that then
    # times out: the request never went out
    import urllib3.connection

    def slow_connect(*args, **kwargs):
        time.sleep(0.6)
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib3.connection.connection, "create_connection", slow_connect)
    client = MittoClient(sim.url, KEY, connect_timeout_s=0.2, read_timeout_s=0.2, pool_size=1)

    # When a call is made
    result = client.send_one("Shop", Sms(NUMBERS[0], "Hi", "61"), None)

    # Then it is not sent (retried later), not of unknown outcome (never sent at all)
    assert result.outcome is Outcome.NOT_SENT, result


def test_a_name_that_does_not_resolve_is_not_sent() -> None:
    # Given a provider host whose name does not resolve (a DNS outage)
    client = MittoClient("http://no-such-host.invalid", KEY, 1, 1, pool_size=1)

    # When a call and a bulk call are made
    one = client.send_one("Shop", Sms(NUMBERS[0], "Hi", "71"), None)
    many = client.send_bulk("Shop", NUMBERS[:2], "Hi", "batch:71:abc", None)

    # Then neither is of unknown outcome: nothing went out, so they are sent again later
    assert one.outcome is Outcome.NOT_SENT, one
    assert [r.outcome for r in many] == [Outcome.NOT_SENT] * 2, many


def test_a_failed_tls_handshake_is_not_sent() -> None:
    # Given a provider port that answers a TLS client hello with garbage and closes
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        with listener:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    client = MittoClient(f"https://127.0.0.1:{port}", KEY, 1, 1, pool_size=1)

    # When a call is made
    result = client.send_one("Shop", Sms(NUMBERS[0], "Hi", "72"), None)

    # Then it is not sent: the handshake failed before any request went out
    assert result.outcome is Outcome.NOT_SENT, result
    assert "SSLError" in result.reason or "SSL" in result.reason, result.reason
