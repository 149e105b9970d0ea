"""`astronote status`: what `/ops` shows, in a terminal. Reads PostgreSQL and Redis directly,
so it works when no web process runs (exactly when an operator needs it most).

Exit status: 0 when the system is ok, 1 when not (so scripts and cron can alert on it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

BAR_WIDTH = 24


def progress_bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = round(width * min(100.0, max(0.0, percent)) / 100)
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:5.1f}%"


def _ago(value: Any, now: datetime) -> str:
    if not value:
        return "never"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    seconds = int((now - when).total_seconds())
    return f"{seconds} s ago" if seconds < 90 else f"{seconds // 60} min ago"


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return [line(header), *(line(row) for row in rows)]


def render(state: dict[str, Any], now: datetime | None = None) -> str:
    """The operator state (`service.board.operator_state`) as plain text."""
    now = now or datetime.now(UTC)
    health = state["health"]
    out = [
        f"Astronote status at {now.isoformat(timespec='seconds')}: "
        + ("OK" if health["ok"] else "NOT OK")
    ]
    out += [f"  ! {problem}" for problem in health["problems"]]
    out += ["", "Campaigns"]
    rows = [
        [
            str(c["id"]),
            c["shop"],
            c["name"][:30],
            c["status"] + (" (STUCK)" if c.get("stuck") else ""),
            progress_bar(c["percent"]),
            f"{c['counts']['sent']}/{c['total']}",
            str(c["counts"]["failed"]),
            str(c["counts"]["pending"]),
            _ago(c["last_progress_at"], now),
        ]
        for c in state["campaigns"]
    ]
    out += (
        _table(
            rows,
            [
                "id",
                "shop",
                "name",
                "status",
                "progress",
                "sent",
                "failed",
                "pending",
                "last progress",
            ],
        )
        if rows
        else ["  none"]
    )
    out += ["", "Queues"] + _queues(health)
    out += ["", "Workers"] + _workers(health)
    out += ["", "Scheduler"] + _scheduler(health, now)
    return "\n".join(out) + "\n"


def _queues(health: dict[str, Any]) -> list[str]:
    queues, workers = health.get("queues", {}), health.get("workers", {})
    if "error" in queues:
        return [f"  unknown: {queues['error']}"]
    consumers = workers.get("consumers", {})
    # `active` is None on RabbitMQ (messages held by workers are not visible over AMQP).
    rows = [
        [
            name,
            str(q["waiting"]),
            str(q["active"] if q["active"] is not None else "?"),
            str(q["delayed"]),
            str(q["failed"]),
            str(consumers.get(name, "?")),
        ]
        for name, q in queues.items()
    ]
    return _table(rows, ["queue", "waiting", "active", "delayed", "failed", "consumers"])


def _workers(health: dict[str, Any]) -> list[str]:
    workers = health.get("workers", {})
    if "error" in workers:
        return [f"  unknown: {workers['error']}"]
    if not workers["processes"]:
        return ["  no live worker process"]
    rows = [
        [w["holder"], ", ".join(w["queues"]), str(w["threads"]), f"{int(w['age_s'])} s"]
        for w in workers["processes"]
    ]
    return _table(rows, ["process", "queues", "threads", "age"])


def _scheduler(health: dict[str, Any], now: datetime) -> list[str]:
    scheduler = health.get("scheduler", {})
    if "error" in scheduler:
        return [f"  unknown: {scheduler['error']}"]
    lock = scheduler["lock"]
    lines = [
        f"  leader: {lock['holder']} (epoch {lock['epoch']}, lock ttl {lock['ttl_ms']} ms)"
        if lock["exists"]
        else "  leader: none"
    ]
    lines += [
        f"  clock {c['holder']}: RUN_SCHEDULER={str(c['run_scheduler']).lower()}, "
        + ("leading" if c["leading"] else "standby")
        for c in scheduler["clocks"]
    ]
    lines += [
        f"  job {name}: last run {_ago(run.get('started_at'), now)}, "
        + ("ok" if run.get("ok") else "failed")
        for name, run in scheduler["jobs"].items()
    ]
    return lines


def run(
    as_json: bool,
    watch_s: float | None,
    out: TextIO,
    state_of: Callable[[], dict[str, Any]] | None = None,
) -> int:
    """Print the state once (or every `watch_s` seconds until Ctrl-C); 0 if ok, else 1."""
    if state_of is None:
        state_of = _live_state()
    while True:
        state = state_of()
        if as_json:
            out.write(json.dumps(state, default=str) + "\n")
        else:
            out.write(("\x1b[H\x1b[2J" if watch_s else "") + render(state))
        out.flush()
        if not watch_s:
            return 0 if state["health"]["ok"] else 1
        try:
            time.sleep(watch_s)
        except KeyboardInterrupt:
            return 0 if state["health"]["ok"] else 1


def _live_state() -> Callable[[], dict[str, Any]]:
    import redis

    from models.database import db
    from service.infra import runtime
    from service.observability import board
    from service.observability.health import HealthChecker

    settings = runtime.boot("status", needs_secret_key=False)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    checker = HealthChecker(settings, client)

    def state() -> dict[str, Any]:
        # No `connection()` block: a database that is down must be reported, not raised.
        try:
            return board.operator_state(checker)
        finally:
            if not db.is_closed():
                db.close()

    return state
