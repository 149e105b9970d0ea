"""Process start-up shared by web, worker and clock: settings, logs, database, broker."""

from __future__ import annotations

import redis

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


def check_redis_database(settings: Settings) -> None:
    """Stop with one line if Redis refuses REDIS_URL's database number (over its `databases`):
    the worker's consumers and the clock's election otherwise failed on it in a loop, a
    traceback a second (a probe). Redis down is no configuration error: the processes wait
    for it as for any outage."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    if not client.connection_pool.connection_kwargs.get("db"):
        return  # database 0: every Redis has it
    try:
        client.echo("astronote")  # any command: the connection's SELECT is what may fail
    except redis.ResponseError as error:
        if "DB index" in str(error):
            config.exit_with_error(
                f"REDIS_URL names a database this Redis does not have ({error}; see its"
                " `databases` setting)"
            )
        # Anything else Redis refuses (an ACL without ECHO) is not this check's to decide.
    except redis.RedisError:
        pass
    finally:
        client.close()


def boot(role: str, needs_secret_key: bool = True, lock_timeout_ms: int | None = None) -> Settings:
    settings = check(needs_secret_key)
    check_redis_database(settings)
    logs.configure(role)
    logs.hide_secrets(*settings.secret_values)
    database.bind(settings.database_url, settings.db_max_connections, lock_timeout_ms)
    broker.setup_broker(settings)
    faults.arm(settings.chaos_faults)
    return settings
