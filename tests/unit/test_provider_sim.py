"""The Mitto API simulator, driven over real HTTP on a free port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from astronote.sim import SimServer, main, start_background

KEY = "test-key"
HEADERS = {"X-Mitto-API-Key": KEY}


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimServer]]:
    servers: list[SimServer] = []

    def start(**options: Any) -> SimServer:
        options.setdefault("api_key", KEY)
        server = start_background(port=0, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sim(start_sim: Callable[..., SimServer]) -> SimServer:
    return start_sim(dlr_delay_ms=20)


class _Receiver:
    """A tiny webhook endpoint recording every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.paths: list[str] = []
        self.connections: set[int] = set()  # the client ports posts came from
        self.in_flight = self.most_in_flight = 0
        # A post waits (up to hold_s) until this many are in flight: what shows a bound
        self.hold_until, self.hold_s = 0, 0.0
        # The first `shed` posts are answered 503 with this Retry-After (a receiver shedding)
        self.shed, self.retry_after, self.shed_at = 0, "0.2", []  # shed_at: monotonic times
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._cond:
                    shedding = len(receiver.shed_at) < receiver.shed
                    if shedding:
                        receiver.shed_at.append(time.monotonic())
                if shedding:
                    self.send_response(503)
                    self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._cond:
                    receiver.connections.add(self.client_address[1])
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    receiver._cond.notify_all()
                    receiver._cond.wait_for(
                        lambda: receiver.in_flight >= receiver.hold_until, receiver.hold_s
                    )
                    receiver.in_flight -= 1
                    receiver.bodies.append(json.loads(body))
                    receiver.paths.append(self.path)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/mitto/dlr?token=t"

    def reports(self) -> list[dict[str, Any]]:
        with self._cond:
            flat = []
            for body in self.bodies:
                flat.extend(body if isinstance(body, list) else [body])
            return flat

    def wait_for(self, n: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.reports()) < n and time.monotonic() < deadline:
            with self._cond:
                self._cond.wait(0.05)
        return self.reports()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _sms(sim: SimServer, **fields: Any) -> requests.Response:
    body = {"from": "Shop", "to": "306900000001", "text": "Hello"} | fields
    return requests.post(f"{sim.url}/sms", json=body, headers=HEADERS, timeout=5)


def _config(sim: SimServer, **fields: Any) -> dict[str, Any]:
    response = requests.post(f"{sim.url}/_sim/config", json=fields, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _messages(sim: SimServer, **params: str) -> dict[str, Any]:
    return requests.get(f"{sim.url}/_sim/messages", params=params, timeout=5).json()


def _stats(sim: SimServer) -> dict[str, int]:
    return requests.get(f"{sim.url}/_sim/stats", timeout=5).json()


def test_accepted_sms_is_recorded(sim: SimServer) -> None:
    response = _sms(sim, reference="r-1", text="Hi there")
    assert response.status_code == 200
    answer = response.json()
    assert answer["responseCode"] == 0
    assert answer["id"] and answer["to"] == "306900000001"
    assert answer["textLength"] == 8 and answer["timestamp"].endswith("Z")

    listed = _messages(sim)
    assert listed["count"] == 1
    record = listed["messages"][0]
    assert record["id"] == answer["id"]
    assert record["reference"] == "r-1" and record["endpoint"] == "sms"
    assert record["from"] == "Shop" and record["text"] == "Hi there"
    assert _stats(sim)["accepted"] == 1
    assert requests.get(f"{sim.url}/_sim/health", timeout=5).json() == {"ok": True}


def test_missing_fields_are_400(sim: SimServer) -> None:
    response = requests.post(
        f"{sim.url}/sms", json={"from": "Shop", "text": "x"}, headers=HEADERS, timeout=5
    )
    assert response.status_code == 400
    assert _messages(sim)["count"] == 0


def test_smsbulk_answers_per_number_in_order(sim: SimServer) -> None:
    _config(sim, reject_prefixes=["3070"])
    numbers = ["306900000001", "307000000002", "306900000003"]
    response = requests.post(
        f"{sim.url}/smsbulk",
        json={"from": "Shop", "to": ",".join(numbers), "text": "Sale", "reference": "batch:1"},
        headers=HEADERS,
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["responseCode"] == 0
    assert [m["to"] for m in body["messages"]] == numbers
    assert [m["responseCode"] for m in body["messages"]] == [0, 6, 0]
    assert len({m["id"] for m in body["messages"] if m["id"]}) == 2
    recorded = _messages(sim, reference="batch:1")
    assert sorted(m["to"] for m in recorded["messages"]) == [numbers[0], numbers[2]]
    assert all(m["endpoint"] == "smsbulk" for m in recorded["messages"])


def test_reject_prefixes_reject_and_record_nothing(sim: SimServer) -> None:
    _config(sim, reject_prefixes=["+3071"])
    for _ in range(3):
        answer = _sms(sim, to="307100000009").json()
        assert answer["responseCode"] == 6 and answer["responseText"] == "Invalid destination"
    assert _messages(sim)["count"] == 0
    assert _stats(sim)["rejected"] == 3


def test_forced_429_then_ok(sim: SimServer) -> None:
    _config(sim, next=["429"], retry_after_s=2)
    first = _sms(sim)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert first.json() == {"responseCode": 429, "responseText": "Too Many Requests"}
    assert _messages(sim)["count"] == 0
    second = _sms(sim)
    assert second.status_code == 200 and second.json()["responseCode"] == 0
    assert _messages(sim)["count"] == 1
    assert _stats(sim)["throttled"] == 1


def test_the_timeline_counts_the_most_messages_in_any_sliding_window(sim: SimServer) -> None:
    # Given three messages from one sender, a bulk of two from another, and a 429
    _config(sim, next=["ok", "ok", "429"])
    began = time.time()
    _sms(sim, **{"from": "A"})
    _sms(sim, **{"from": "A"})
    assert _sms(sim, **{"from": "A"}).status_code == 429
    time.sleep(0.3)
    _sms(sim, **{"from": "A"})
    requests.post(
        f"{sim.url}/smsbulk",
        json={"from": "B", "to": "306900000001,306900000002", "text": "Sale"},
        headers=HEADERS,
        timeout=5,
    )

    # Then the timeline has every accepted message and the 429's time
    timeline = requests.get(f"{sim.url}/_sim/timeline", timeout=5).json()
    assert (timeline["sent"], timeline["max_in_window"], timeline["window_ms"]) == (5, 5, 1000)
    assert sum(n for _, n in timeline["per_second"]) == 5
    assert len(timeline["throttled_at"]) == 1 and timeline["throttled_at"][0] >= began
    assert timeline["first"] >= began and timeline["last"] >= timeline["first"] + 0.3
    # A window shorter than the pause splits the messages; a sender sees only its own
    short = requests.get(f"{sim.url}/_sim/timeline?window_ms=200", timeout=5).json()
    assert 2 <= short["max_in_window"] <= 3  # the bulk pair, and the /sms just before it
    with_times = requests.get(f"{sim.url}/_sim/timeline?times=1", timeout=5).json()
    assert len(with_times["sent_at"]) == 5 and "sent_at" not in timeline
    only_b = requests.get(f"{sim.url}/_sim/timeline?from=B", timeout=5).json()
    assert (only_b["sent"], only_b["max_in_window"]) == (2, 2)
    bad = requests.get(f"{sim.url}/_sim/timeline?window_ms=x", timeout=5)
    assert bad.status_code == 400
    requests.post(f"{sim.url}/_sim/reset", timeout=5)
    assert requests.get(f"{sim.url}/_sim/timeline", timeout=5).json()["sent"] == 0


def test_forced_timeout_records_message_but_client_times_out(sim: SimServer) -> None:
    _config(sim, next=["timeout"], timeout_s=1.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{sim.url}/sms",
            json={"from": "Shop", "to": "306900000001", "text": "Hi", "reference": "r-9"},
            headers=HEADERS,
            timeout=0.5,
        )
    assert _messages(sim, reference="r-9")["count"] == 1
    assert _stats(sim)["timeouts"] == 1


def test_forced_reset_and_refuse_before(sim: SimServer) -> None:
    _config(sim, next=["reset", "refuse_before", "500"])
    with pytest.raises(requests.exceptions.ConnectionError):
        _sms(sim, reference="after")
    with pytest.raises(requests.exceptions.ConnectionError):
        _sms(sim, reference="before")
    assert _sms(sim).status_code == 500
    assert _messages(sim, reference="after")["count"] == 1
    assert _messages(sim, reference="before")["count"] == 0


def test_hang_holds_the_call_then_drops_it_without_accepting(sim: SimServer) -> None:
    # A provider that hangs: the forced one, then one drawn by rate, each held for timeout_s
    _config(sim, next=["hang"], timeout_s=0.6)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        _sms(sim, reference="held")
    assert time.monotonic() - started >= 0.5, "answered before timeout_s"
    _config(sim, hang_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        _sms(sim, reference="held-by-rate")
    # ...nothing was accepted; a client that gives up first sees a read timeout
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{sim.url}/sms",
            json={"from": "Shop", "to": "306900000001", "text": "Hi", "reference": "gave-up"},
            headers=HEADERS,
            timeout=0.2,
        )
    _config(sim, hang_rate=0.0)
    assert _sms(sim, reference="after").status_code == 200
    assert _messages(sim)["count"] == 1
    assert _stats(sim)["hangs"] == 3


def _bulk(sim: SimServer, numbers: list[str], reference: str) -> requests.Response:
    body = {"from": "Shop", "to": ",".join(numbers), "text": "Sale", "reference": reference}
    return requests.post(f"{sim.url}/smsbulk", json=body, headers=HEADERS, timeout=5)


NUMBERS = [f"+3069000000{i:02d}" for i in range(8)]


def test_forced_shuffled_bulk_answer_is_out_of_order_then_in_order(sim: SimServer) -> None:
    # Given a provider forced to answer the next bulk call out of order
    _config(sim, next=["shuffled"])

    # When two bulk calls are made
    shuffled = _bulk(sim, NUMBERS, "batch:1").json()["messages"]
    ordered = _bulk(sim, NUMBERS, "batch:2").json()["messages"]

    # Then the first answers every number once, in another order, each with its recorded id
    assert [m["to"] for m in shuffled] != NUMBERS
    assert sorted(m["to"] for m in shuffled) == sorted(NUMBERS)
    recorded = {m["to"]: m["id"] for m in _messages(sim, reference="batch:1")["messages"]}
    assert {m["to"]: m["id"] for m in shuffled} == recorded
    assert [m["to"] for m in ordered] == NUMBERS


def test_shuffle_bulk_answers_every_bulk_call_out_of_order(
    start_sim: Callable[..., SimServer],
) -> None:
    sim = start_sim(shuffle_bulk=True, dlr_enabled=False)
    for reference in ("batch:1", "batch:2"):
        assert [m["to"] for m in _bulk(sim, NUMBERS[:2], reference).json()["messages"]] == [
            NUMBERS[1],
            NUMBERS[0],
        ]
    bad = requests.post(f"{sim.url}/_sim/config", json={"shuffle_bulk": 1}, timeout=5)
    assert bad.status_code == 400 and "shuffle_bulk" in bad.text


@pytest.mark.parametrize(
    ("outcome", "bulk_answer", "sms_answer"),
    [
        ("answer_array", list, list),
        ("answer_string", "Accepted", "Accepted"),
        ("answer_number", 0, 0),
        (
            "answer_no_messages",
            {"responseCode": 0, "responseText": "OK"},
            {"responseCode": 0, "responseText": "OK"},
        ),
        ("answer_no_ids", dict, dict),
    ],
)
def test_forced_malformed_answers_still_record_the_messages(
    sim: SimServer, outcome: str, bulk_answer: Any, sms_answer: Any
) -> None:
    # Given a provider forced to answer the next bulk and single calls in a wrong shape
    _config(sim, next=[outcome, outcome])

    # When both calls are made
    many = _bulk(sim, NUMBERS[:3], "batch:1")
    one = _sms(sim, reference="r-1")

    # Then both answer 200 in that shape, and the messages were accepted all the same
    assert many.status_code == 200 and one.status_code == 200
    for answer, expected in ((many.json(), bulk_answer), (one.json(), sms_answer)):
        if isinstance(expected, type):
            assert isinstance(answer, expected)
        else:
            assert answer == expected
    if outcome == "answer_no_ids":
        assert all("id" not in m and m["responseCode"] == 0 for m in many.json()["messages"])
        assert "id" not in one.json() and one.json()["to"] == "306900000001"
    if outcome == "answer_array":
        assert [m["to"] for m in many.json()] == NUMBERS[:3]
    assert _messages(sim, reference="batch:1")["count"] == 3
    assert _messages(sim, reference="r-1")["count"] == 1


def test_missing_or_wrong_api_key_is_401(sim: SimServer) -> None:
    body = {"from": "Shop", "to": "306900000001", "text": "Hi"}
    for headers in ({}, {"X-Mitto-API-Key": "wrong"}):
        response = requests.post(f"{sim.url}/sms", json=body, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"responseCode": 401, "responseText": "Unauthorized"}
    assert _messages(sim)["count"] == 0


def test_dlr_posted_to_callback(sim: SimServer, receiver: _Receiver) -> None:
    answer = _sms(sim, reference="rcpt-42", callback=receiver.url).json()
    reports = receiver.wait_for(1)
    assert len(reports) == 1
    report = reports[0]
    assert report["id"] == answer["id"]
    assert report["to"] == "306900000001"
    assert report["reference"] == "rcpt-42"
    assert report["deliveryStatus"] == "Delivered" and report["statusCode"] == 0
    assert report["timestamp"].endswith("Z")
    assert receiver.paths[0].endswith("?token=t")
    deadline = time.monotonic() + 2
    while _stats(sim)["dlr_sent"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = _stats(sim)
    assert stats["dlr_sent"] == 1 and stats["dlr_pending"] == 0


def test_dlr_batch_posts_arrays(sim: SimServer, receiver: _Receiver) -> None:
    _config(sim, dlr_batch=10, dlr_mix={"Failed": 1.0})
    numbers = [f"3069000000{i:02d}" for i in range(5)]
    requests.post(
        f"{sim.url}/smsbulk",
        json={"from": "S", "to": ",".join(numbers), "text": "x", "callback": receiver.url},
        headers=HEADERS,
        timeout=5,
    ).raise_for_status()
    reports = receiver.wait_for(5)
    assert sorted(r["to"] for r in reports) == numbers
    assert all(isinstance(body, list) for body in receiver.bodies)
    assert all(r["deliveryStatus"] == "Failed" and r["statusCode"] != 0 for r in reports)


def _bulk_to(sim: SimServer, receiver: _Receiver, count: int) -> list[str]:
    numbers = [f"3069000000{i:02d}" for i in range(count)]
    requests.post(
        f"{sim.url}/smsbulk",
        json={"from": "S", "to": ",".join(numbers), "text": "x", "callback": receiver.url},
        headers=HEADERS,
        timeout=5,
    ).raise_for_status()
    return numbers


def test_pooled_reports_reuse_a_bounded_pool_of_connections(
    sim: SimServer, receiver: _Receiver
) -> None:
    # Given a receiver that holds each post until 20 are in flight (or 0.2 s)
    receiver.hold_until, receiver.hold_s = 20, 0.2
    # When 20 reports fall due at once with the default (pooled) posting
    numbers = _bulk_to(sim, receiver, 20)
    # Then all arrive, never more than the 4 sender threads at once, over reused connections
    assert sorted(r["to"] for r in receiver.wait_for(20, timeout=5)) == numbers
    assert receiver.most_in_flight <= 4
    assert len(receiver.connections) <= 8


def test_burst_reports_open_a_connection_per_post_without_a_bound(
    start_sim: Callable[..., SimServer], receiver: _Receiver
) -> None:
    # Given the simulator in burst mode (started so, as `--dlr-burst` does)
    sim = start_sim(dlr_delay_ms=20, dlr_burst=True)
    assert requests.get(f"{sim.url}/_sim/config", timeout=5).json()["dlr_burst"] is True
    receiver.hold_until, receiver.hold_s = 20, 3.0
    # When 20 reports fall due at once
    numbers = _bulk_to(sim, receiver, 20)
    # Then all 20 are in flight together (4 sender threads could not), each on its own
    # connection, and the simulator counts each as posted
    assert sorted(r["to"] for r in receiver.wait_for(20, timeout=5)) == numbers
    assert receiver.most_in_flight == 20
    assert len(receiver.connections) == 20
    deadline = time.monotonic() + 2
    while _stats(sim)["dlr_sent"] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _stats(sim)["dlr_sent"] == 20 and _stats(sim)["dlr_pending"] == 0


@pytest.mark.parametrize("burst", [False, True], ids=["pooled", "burst"])
def test_a_report_answered_503_is_retried_after_retry_after_and_counted_once(
    start_sim: Callable[..., SimServer], receiver: _Receiver, burst: bool
) -> None:
    # Given a receiver that sheds its first 10 posts with 503 and Retry-After: 0.5
    sim = start_sim(dlr_delay_ms=20, dlr_burst=burst)
    receiver.shed, receiver.retry_after = 10, "0.5"
    # When 10 reports fall due
    numbers = _bulk_to(sim, receiver, 10)
    # Then each arrives once, no sooner than Retry-After after its refusal
    assert sorted(r["to"] for r in receiver.wait_for(10, timeout=10)) == numbers
    assert len(receiver.shed_at) == 10
    with receiver._cond:
        assert len(receiver.bodies) == 10
    deadline = time.monotonic() + 3
    while _stats(sim)["dlr_sent"] < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    # And the simulator counts 10 answered, none failed, 10 retried
    stats = _stats(sim)
    assert (stats["dlr_sent"], stats["dlr_failed"], stats["dlr_retries"]) == (10, 0, 10)


def test_retries_honour_retry_after_and_stop_at_their_bound() -> None:
    from astronote.sim import retry

    now = [0.0]
    retries = retry.Retries(clock=lambda: now[0])
    # A 503 with Retry-After waits at least that long (with jitter, at most half more)
    assert 2.0 <= retries.after(503, "2") <= 3.0
    # A huge Retry-After is capped; a 4xx is final; a 2xx is done
    assert retries.after(503, "86400") <= retry.MAX_RETRY_AFTER_S * 1.5
    assert retries.after(400) is None and retries.after(200) is None
    # No answer backs off; past the window (or the attempts) it gives up
    assert retries.after(None) is not None
    now[0] = retry.WINDOW_S
    assert retries.after(None) is None
    fresh = retry.Retries(clock=lambda: 0.0)
    waits = [fresh.after(429) for _ in range(retry.MAX_ATTEMPTS)]
    assert all(w is not None for w in waits[:-1]) and waits[-1] is None


def test_burst_mode_is_a_boolean_config_field(sim: SimServer) -> None:
    assert _config(sim, dlr_burst=True)["dlr_burst"] is True
    refused = requests.post(f"{sim.url}/_sim/config", json={"dlr_burst": "yes"}, timeout=5)
    assert refused.status_code == 400 and "dlr_burst" in refused.text


def test_dlr_duplicates_and_intermediate(sim: SimServer, receiver: _Receiver) -> None:
    _config(sim, dlr_duplicate_rate=1.0, dlr_queued_first=True)
    answer = _sms(sim, callback=receiver.url).json()
    reports = receiver.wait_for(3)
    assert [r["deliveryStatus"] for r in reports] == ["Sent", "Delivered", "Delivered"]
    assert {r["id"] for r in reports} == {answer["id"]}


def test_inbound_messages_are_posted_to_the_inbound_url(
    sim: SimServer, receiver: _Receiver
) -> None:
    # Given no inbound URL yet: a request is refused, naming what is missing
    body = {"from": "306900000001", "to": "306999000001", "text": "STOP"}
    refused = requests.post(f"{sim.url}/_sim/inbound", json=body, timeout=5)
    assert refused.status_code == 400 and "inbound_url" in refused.text
    # When one is configured and a customer's message is sent twice (a provider's retry)
    _config(sim, inbound_url=receiver.url)
    answer = requests.post(f"{sim.url}/_sim/inbound", json={**body, "repeat": 2}, timeout=5)
    # Then the same message, with one id and a timestamp, reached the URL twice
    assert answer.status_code == 200, answer.text
    assert [a["status"] for a in answer.json()["answers"]] == [200, 200]
    posted = receiver.wait_for(2)
    assert posted[0] == posted[1] == answer.json()["message"]
    assert posted[0]["text"] == "STOP" and posted[0]["id"].startswith("in-")
    assert posted[0]["timestamp"].endswith("Z")
    assert _stats(sim)["inbound_posted"] == 2
    # And a request of the wrong shape is refused
    for bad in ({**body, "repeat": 0}, {**body, "text": 5}, {**body, "sender": "x"}):
        assert requests.post(f"{sim.url}/_sim/inbound", json=bad, timeout=5).status_code == 400


def test_summary_reports_duplicates_and_reset_restores(start_sim: Callable[..., SimServer]) -> None:
    sim = start_sim(latency_ms=0, dlr_enabled=False)
    _sms(sim, reference="r-1")
    _sms(sim, reference="r-1")
    _sms(sim, reference="r-2")
    summary = _messages(sim, summary="1")
    assert summary["count"] == 3
    assert summary["duplicates"] == [["306900000001", "r-1"]]
    bad = requests.post(f"{sim.url}/_sim/config", json={"fail_rate_429": 2}, timeout=5)
    assert bad.status_code == 400
    assert _config(sim, latency_ms=5)["latency_ms"] == 5
    requests.post(f"{sim.url}/_sim/reset", timeout=5).raise_for_status()
    assert _messages(sim)["count"] == 0
    assert _stats(sim)["accepted"] == 0
    config = requests.get(f"{sim.url}/_sim/config", timeout=5).json()
    assert config["latency_ms"] == 0 and config["dlr_enabled"] is False


def test_main_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--fail-rate-429", "3"]) == 2
    assert "provider_sim.failed" in capsys.readouterr().err


def test_a_burst_answer_cut_before_its_head_ends_is_no_answer() -> None:
    from astronote.sim.burst import _status

    whole = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n"
    assert _status(whole) == (503, "2")
    assert _status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}") == (200, None)
    # A reset or a close before the blank line: retried as a provider retries no answer
    assert _status(whole[:30]) == (None, None)
    assert _status(b"") == (None, None)
