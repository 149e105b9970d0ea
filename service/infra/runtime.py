"""Process start-up shared by web, worker and clock: settings, logs, database, broker."""

from __future__ import annotations

from models import database
from service.infra import broker, config, faults, logs
from service.infra.config import Settings


def require(settings: Settings, *names: str) -> None:
    """Stop with one line if a variable this process cannot run without is unset."""
    for name in names:
        if not getattr(settings, name.lower()):
            config.exit_with_error(f"{name} is not set")


def check(needs_secret_key: bool = True) -> Settings:
    """The settings, or the end of the process with one line naming what is wrong.

    SECRET_KEY signs unsubscribe links (worker, reconciler, so the clock too) and checks them
    (web); only a process that merely reads state (`astronote status`) runs without it.
    """
    settings = config.settings()
    require(settings, "DATABASE_URL", "REDIS_URL", *(("SECRET_KEY",) if needs_secret_key else ()))
    return settings


def boot(role: str, needs_secret_key: bool = True, lock_timeout_ms: int | None = None) -> Settings:
    settings = check(needs_secret_key)
    logs.configure(role)
    logs.hide_secrets(*settings.secret_values)
    database.bind(settings.database_url, settings.db_max_connections, lock_timeout_ms)
    broker.setup_broker(settings)
    faults.arm(settings.chaos_faults)
    return settings
