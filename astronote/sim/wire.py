"""Lean HTTP/1.1 plumbing under the simulator's request handler; it knows nothing of Mitto.

Only the stdlib serves HTTP: the simulator must sustain thousands of small requests per second
and hundreds of keep-alive connections without adding a dependency. This base class replaces
the costly parts of BaseHTTPRequestHandler (email-based header parsing, split writes).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_LINGER_RST = struct.pack("ii", 1, 0)
_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Headers(dict):
    """Request headers keyed by lower-cased name; the lookups the handler needs, nothing more."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return dict.get(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class LeanRequestHandler(BaseHTTPRequestHandler):
    """Keep-alive JSON request handling: fast header parsing, one write per response."""

    protocol_version = "HTTP/1.1"
    # One write per response already; no Nagle, so nothing waits for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def parse_request(self) -> bool:
        """Parse the request line and headers without the stdlib's email parser.

        The email-based header parsing costs about as much as everything else a request does;
        a plain split halves the simulator's CPU per request, which the system under test
        shares during benchmarks.
        """
        self.command = None
        self.request_version = "HTTP/1.1"  # so that error answers carry a status line
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            self.send_error(400, "Bad request line")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, f"Unsupported HTTP version {version}")
            return False
        self.command, self.path, self.request_version = command, path, version
        headers = _Headers()
        readline = self.rfile.readline
        for _ in range(_MAX_HEADERS + 1):
            line = readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep:
                self.send_error(400, "Malformed header line")
                return False
            dict.__setitem__(headers, name.strip().lower(), value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(n) if n > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_line = self.rfile.readline(_MAX_LINE + 1)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return b""
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE + 1)

    def _send(self, status: int, body: bytes, extra: Iterable[tuple[str, str]] = ()) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head.extend(f"{k}: {v}" for k, v in extra)
        if self.close_connection:
            head.append("Connection: close")
        # Status line, headers and body in one send: a split write plus delayed ACK on the
        # client would cost tens of milliseconds per keep-alive request.
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _drip(self, body: bytes, every_s: float) -> None:
        """A 200 whose body comes one byte every `every_s` (a provider answering slowly,
        each read of it quick); the connection is not reused."""
        self.close_connection = True
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        self.wfile.write((head + "\r\nConnection: close\r\n\r\n").encode("latin-1"))
        try:
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(every_s)
        except OSError:
            pass  # the client gave up

    def _send_json(self, status: int, payload: Any, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(payload).encode(), extra)

    def _reset_connection(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean EOF.
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        self.close_connection = True
        self.connection.close()

    def _split_path(self) -> tuple[str, dict[str, list[str]]]:
        path, _, query = self.path.partition("?")
        if len(path) > 1:
            path = path.rstrip("/")
        return path, parse_qs(query) if query else {}
