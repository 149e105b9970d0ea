"""An HTTP simulator of the Mitto SMS API, for end-to-end tests, the demo and benchmarks.

It speaks the provider's shape (`POST /sms`, `POST /smsbulk`, delivery reports POSTed back to the
request's `callback`), records every accepted message so a test can count what was really sent,
and injects faults (latency, 429, 5xx, timeouts, resets, hangs, rejections) either by rate or by a
deterministic queue of forced outcomes, which also holds answers of the wrong shape and bulk
answers out of order (`shuffle_bulk` answers every bulk call so). Control and inspection live
under `/_sim/`: `POST /_sim/config` merges fields into the running config (`next` replaces the
forced-outcome queue), `GET /_sim/messages[?reference=&to=&summary=1]`, `GET /_sim/stats`,
`GET /_sim/timeline[?window_ms=1000&from=]` (the most messages accepted in any sliding window,
a count per second, when each 429 was answered),
`POST /_sim/reset`, `GET /_sim/health`, and `POST /_sim/inbound {from, to, text, id?,
timestamp?, repeat?}`, which posts a customer's message to the configured `inbound_url` (the
application's inbound webhook) and answers with the application's answers.

Only the stdlib serves HTTP: the simulator must sustain thousands of small requests per second
and hundreds of keep-alive connections without adding a dependency.

Modules: `config` (defaults, validation, forced outcomes), `state` (the Simulator: messages,
stats, outcome choice), `answers` (an accepted call's answer, well-formed or not), `reports`
(delivery-report scheduling and posting), `inbound` (customers' messages), `wire` (lean
HTTP/1.1 plumbing), `server` (the Mitto and `/_sim/` routes, the server), `cli` (the process).
"""

from __future__ import annotations

from astronote.sim.cli import main, serve
from astronote.sim.config import DEFAULT_CONFIG, DLR_STATUSES, FORCED_OUTCOMES
from astronote.sim.server import SimServer, make_server, start_background
from astronote.sim.state import Simulator

__all__ = [
    "DEFAULT_CONFIG",
    "FORCED_OUTCOMES",
    "DLR_STATUSES",
    "Simulator",
    "SimServer",
    "make_server",
    "start_background",
    "serve",
    "main",
]
