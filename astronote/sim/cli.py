"""The simulator as a process: `astronote provider-sim` (argparse `main`) and `serve`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from astronote.sim.config import DEFAULT_CONFIG
from astronote.sim.server import make_server


def serve(
    host: str = "127.0.0.1", port: int = 9090, api_key: str | None = None, **options: Any
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down (pending delivery reports are dropped)."""
    server = make_server(host, port, api_key=api_key, **options)
    cfg = server.simulator.get_config()
    print(
        json.dumps(
            {
                "event": "provider_sim.started",
                "host": server.server_address[0],
                "port": server.server_address[1],
                "dlr": cfg["dlr_enabled"],
                "dlr_delay_ms": cfg["dlr_delay_ms"],
                "api_key_required": api_key is not None,
            }
        ),
        file=sys.stderr,
        flush=True,
    )

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run on serve_forever's
        # own (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(json.dumps({"event": "provider_sim.stopped"}), file=sys.stderr, flush=True)


def _default_port() -> int:
    try:
        return int(os.environ.get("PORT", "") or 9090)
    except ValueError:
        return 9090


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="astronote provider-sim", description="Simulated Mitto SMS API for local work."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=_default_port())
    parser.add_argument("--api-key", default=None, help="require this X-Mitto-API-Key")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--dlr-delay-ms", type=float, default=DEFAULT_CONFIG["dlr_delay_ms"])
    parser.add_argument("--no-dlr", action="store_true", help="post no delivery reports")
    parser.add_argument("--dlr-batch", type=int, default=1)
    parser.add_argument("--dlr-threads", type=int, default=4)
    parser.add_argument(
        "--dlr-burst",
        action="store_true",
        help="post each report batch on its own thread and new connection, without a bound",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-rate-429", type=float, default=0.0)
    parser.add_argument("--fail-rate-500", type=float, default=0.0)
    parser.add_argument("--reject-rate", type=float, default=0.0)
    parser.add_argument(
        "--shuffle-bulk", action="store_true", help="answer bulk messages out of request order"
    )
    parser.add_argument(
        "--inbound-url",
        # The environment is read too: the URL carries a secret, which a command line shows
        # to every user of the machine.
        default=os.environ.get("SIM_INBOUND_URL") or None,
        help="where POST /_sim/inbound posts customers' messages (default: $SIM_INBOUND_URL)",
    )
    args = parser.parse_args(argv)
    try:
        serve(
            args.host,
            args.port,
            api_key=args.api_key,
            seed=args.seed,
            dlr_threads=args.dlr_threads,
            latency_ms=args.latency_ms,
            dlr_delay_ms=args.dlr_delay_ms,
            dlr_enabled=not args.no_dlr,
            dlr_batch=args.dlr_batch,
            dlr_burst=args.dlr_burst,
            fail_rate_429=args.fail_rate_429,
            fail_rate_500=args.fail_rate_500,
            reject_rate=args.reject_rate,
            shuffle_bulk=args.shuffle_bulk,
            inbound_url=args.inbound_url,
        )
    except (ValueError, OSError) as exc:
        print(
            json.dumps({"event": "provider_sim.failed", "error": str(exc)}),
            file=sys.stderr,
            flush=True,
        )
        return 2
    return 0
