"""The simulated Mitto API over HTTP: the send and `/_sim/` routes, and the server carrying them.

`make_server` binds one (port 0 picks a free port); `start_background` also runs it in a
daemon thread, which is how tests use it.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

from astronote.sim.answers import answer_body, terse
from astronote.sim.state import Simulator
from astronote.sim.wire import LeanRequestHandler

# Fixed error answers are serialised once: they are hit at full request rate under fault load.
_BODY_401 = b'{"responseCode": 401, "responseText": "Unauthorized"}'
_BODY_429 = b'{"responseCode": 429, "responseText": "Too Many Requests"}'
_BODY_500 = b'{"responseCode": 500, "responseText": "Internal Server Error"}'
_BODY_503 = b'{"responseCode": 503, "responseText": "Service Unavailable"}'
_BODY_404 = b'{"responseCode": 404, "responseText": "Not Found"}'


def _parse_numbers(to: Any, bulk: bool) -> list[str] | None:
    if isinstance(to, (int, str)) and not isinstance(to, bool):
        raw = str(to)
        parts = raw.split(",") if bulk else [raw]
    elif bulk and isinstance(to, list) and all(isinstance(n, (int, str)) for n in to):
        parts = [str(n) for n in to]
    else:
        return None
    numbers = [p.strip() for p in parts if p.strip()]
    return numbers or None


class _Handler(LeanRequestHandler):
    server_version = "provider-sim"
    server: SimServer

    def _bad_request(self, reason: str) -> None:
        self._send_json(400, {"responseCode": 400, "responseText": f"Bad Request: {reason}"})

    # ---- routes --------------------------------------------------------------------------

    def do_POST(self) -> None:
        body = self._read_body()
        path, _ = self._split_path()
        if path == "/sms":
            self._send_sms(body, bulk=False)
        elif path == "/smsbulk":
            self._send_sms(body, bulk=True)
        elif path == "/_sim/config":
            sim = self.server.simulator
            try:
                update = json.loads(body or b"{}")
                self._send_json(200, sim.update_config(update))
            except ValueError as exc:
                self._bad_request(str(exc))
        elif path == "/_sim/inbound":
            try:
                self._send_json(200, self.server.simulator.send_inbound(json.loads(body or b"{}")))
            except ValueError as exc:
                self._bad_request(str(exc))
        elif path == "/_sim/reset":
            self.server.simulator.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send(404, _BODY_404)

    def do_GET(self) -> None:
        self._read_body()
        path, query = self._split_path()
        sim = self.server.simulator
        if path == "/_sim/health":
            self._send(200, b'{"ok": true}')
        elif path == "/_sim/stats":
            self._send_json(200, sim.stats())
        elif path == "/_sim/config":
            self._send_json(200, sim.get_config())
        elif path == "/_sim/timeline":
            try:
                window_ms = int(query.get("window_ms", ["1000"])[0])
            except ValueError:
                self._bad_request("window_ms must be an integer")
                return
            if window_ms < 1:
                self._bad_request("window_ms must be at least 1")
                return
            sender = query.get("from", [None])[0]
            times = query.get("times", ["0"])[0] not in ("", "0", "false")
            self._send_json(200, sim.timeline(window_ms, sender, times))
        elif path == "/_sim/messages":
            reference = query.get("reference", [None])[0]
            to = query.get("to", [None])[0]
            sender = query.get("from", [None])[0]
            if query.get("summary", ["0"])[0] not in ("", "0", "false"):
                self._send_json(200, sim.summary(reference, to, sender))
            else:
                selected = sim.messages(reference, to, sender)
                self._send_json(200, {"count": len(selected), "messages": selected})
        else:
            self._send(404, _BODY_404)

    def _send_sms(self, body: bytes, bulk: bool) -> None:
        # The provider counts a call when it arrives, before its fate is decided.
        arrived = time.time()
        sim = self.server.simulator
        if not sim.check_api_key(self.headers.get("X-Mitto-API-Key")):
            sim.bump(requests=1, bad_requests=1)
            self._send(401, _BODY_401)
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            sim.bump(requests=1, bad_requests=1)
            self._bad_request("body must be a JSON object")
            return
        numbers = _parse_numbers(payload.get("to"), bulk)
        missing = [
            name
            for name, ok in (
                ("from", isinstance(payload.get("from"), str) and payload["from"]),
                ("to", numbers),
                ("text", isinstance(payload.get("text"), str) and payload["text"]),
            )
            if not ok
        ]
        if missing:
            sim.bump(requests=1, bad_requests=1)
            self._bad_request(f"missing or invalid {', '.join(missing)}")
            return
        assert numbers is not None
        cfg = sim.live_config
        outcome = sim.choose_outcome(cfg)
        sim.sleep(cfg["latency_ms"] / 1000.0)

        if outcome == "429":
            sim.throttled(arrived)
            retry_after = cfg["retry_after_s"]
            retry_text = (
                str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
            )
            self._send(429, _BODY_429, (("Retry-After", retry_text),))
            return
        if outcome in ("500", "503"):
            sim.bump(requests=1, errors=1)
            self._send(int(outcome), _BODY_500 if outcome == "500" else _BODY_503)
            return
        if outcome == "refuse_before":
            sim.bump(requests=1, resets=1)
            self._reset_connection()
            return
        if outcome == "hang":
            # Nothing is accepted: the provider holds the call, then drops it unanswered.
            sim.bump(requests=1, hangs=1)
            sim.sleep(cfg["timeout_s"])
            self._reset_connection()
            return

        sim.bump(requests=1)
        answers = sim.accept("smsbulk" if bulk else "sms", payload, numbers, cfg, outcome, arrived)
        if outcome == "reset":
            sim.bump(resets=1)
            self._reset_connection()
            return
        if bulk and (outcome == "shuffled" or cfg["shuffle_bulk"]):
            answers = sim.shuffled(answers)
        if cfg["terse"]:
            answers = terse(answers, bulk)
        encoded = json.dumps(answer_body(outcome, answers, bulk)).encode()
        if outcome == "drip":
            sim.bump(timeouts=1)
            self._drip(encoded, cfg["drip_s"])
            return
        if outcome == "timeout":
            sim.bump(timeouts=1)
            sim.sleep(cfg["timeout_s"])
            # The client has most likely given up; do not reuse a connection whose peer left.
            self.close_connection = True
        self._send(200, encoded)


class SimServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying its Simulator; closing the server stops report senders."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds
        # on a box with slow reverse DNS; nothing here needs it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (read timeout, reset) is routine here, not an error to print.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.simulator.close()


def make_server(host: str = "127.0.0.1", port: int = 9090, **options: Any) -> SimServer:
    """Bind a simulator server (port 0 picks a free port; see `server.url`).

    `options` are `api_key`, `seed`, `dlr_threads` and any field of DEFAULT_CONFIG as its
    start-up value (restored by `POST /_sim/reset`).
    """
    return SimServer((host, port), Simulator(**options))


def start_background(host: str = "127.0.0.1", port: int = 0, **options: Any) -> SimServer:
    """Start a server in a daemon thread and return it; stop with `shutdown()` +
    `server_close()`."""
    server = make_server(host, port, **options)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    return server
