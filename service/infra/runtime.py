"""Process start-up shared by web, worker and clock: settings, logs, database, broker."""
from __future__ import annotations

import sys

from models import database
from service.infra import broker, config, logs
from service.infra.config import Settings


def require(settings: Settings, *names: str) -> None:
    """Stop with one line if a variable this process cannot run without is unset."""
    for name in names:
        if not getattr(settings, name.lower()):
            print(f"astronote: configuration error: {name} is not set", file=sys.stderr)
            raise SystemExit(2)


def boot(role: str) -> Settings:
    settings = config.settings()
    logs.configure(role)
    require(settings, "DATABASE_URL", "REDIS_URL")
    database.bind(settings.database_url, settings.db_max_connections)
    broker.setup_broker(settings)
    return settings
