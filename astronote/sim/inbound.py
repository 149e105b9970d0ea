"""Inbound messages: the simulator posts a message "a customer sent" to the configured inbound
URL, as the provider forwards replies to an application (`POST /_sim/inbound`).

The body posted is `{from, to, text, id, timestamp}`; `repeat` posts the very same message
(same id) several times, as a provider retries a delivery it believes failed.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import requests

from astronote.sim.reports import now_iso

MAX_REPEAT = 10
_TIMEOUT = (2.0, 30.0)
_ids = itertools.count(1)
_prefix = os.urandom(6).hex()


def inbound_message(request: Any) -> tuple[dict[str, Any], int, str | None]:
    """(the message to post, how many times, URL override) of a `/_sim/inbound` request, or
    ValueError naming what is wrong with it."""
    if not isinstance(request, dict):
        raise ValueError("the request must be a JSON object")
    unknown = sorted(set(request) - {"from", "to", "text", "id", "timestamp", "repeat", "url"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    for name in ("from", "to", "text"):
        if not isinstance(request.get(name), str):
            raise ValueError(f"{name} must be a string")
    repeat = request.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise ValueError(f"repeat must be an integer from 1 to {MAX_REPEAT}")
    url = request.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError("url must be a string")
    message = {
        "from": request["from"],
        "to": request["to"],
        "text": request["text"],
        "id": request.get("id") or f"in-{_prefix}{next(_ids):08x}",
        "timestamp": request.get("timestamp") or now_iso(),
    }
    return message, repeat, url


def post_inbound(url: str, message: dict[str, Any], repeat: int) -> list[dict[str, Any]]:
    """Post `message` to `url` `repeat` times, one after the other; each answer's status and
    body (None for a call that got no answer, with the error)."""
    answers = []
    with requests.Session() as session:
        session.trust_env = False
        for _ in range(repeat):
            try:
                response = session.post(url, json=message, timeout=_TIMEOUT)
            except requests.RequestException as error:
                answers.append({"status": None, "error": type(error).__name__})
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text[:500]
            answers.append({"status": response.status_code, "body": body})
    return answers
