"""Configuration: every environment variable the processes read, parsed in one place.

`load()` returns an immutable `Settings`; an invalid value raises `ConfigError` whose message
names the variable, and `load_or_exit()` turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, urlparse


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it."""


# What one window of a batch may spend around its provider calls (claim, compose, persist):
# tens of milliseconds in practice; small, so short timeouts such as CLAIM_TIMEOUT_MS=8000
# with PROVIDER_READ_TIMEOUT_MS=3000 remain a valid configuration.
SEND_WINDOW_MARGIN_MS = 250
# The sender of a shop without one when MITTO_SENDER is unset.
FALLBACK_SENDER = "Astronote"


@dataclass(frozen=True)
class Settings:
    # Empty when unset: `runtime.require` stops every process that needs them with one line.
    database_url: str
    redis_url: str
    broker_url: str | None
    port: int
    mitto_api_base: str
    mitto_api_key: str | None
    mitto_sender: str | None
    public_base_url: str
    admin_token: str | None
    dlr_webhook_secret: str | None
    secret_key: str
    run_scheduler: bool
    scheduler_lock_ttl_ms: int
    scheduler_lock_retry_ms: int
    send_batch_size: int
    shop_batches_in_flight: int
    send_concurrency: int
    reply_concurrency: int
    provider_rate_limit: str | None
    sender_rate_limit: str | None
    provider_rate_margin_ms: int
    provider_rate_lookahead_ms: int
    provider_fair_share: bool
    provider_connect_timeout_ms: int
    provider_read_timeout_ms: int
    claim_timeout_ms: int
    reconcile_interval_ms: int
    status_refresh_interval_ms: int
    stuck_campaign_after_ms: int
    paused_campaign_alert_ms: int
    batch_stale_after_ms: int
    send_max_retries: int
    broker_heartbeat_timeout_ms: int
    broker_dead_message_ttl_ms: int
    broker_maintenance_chance: int
    db_max_connections: int
    evidence_window_ms: int
    schedule_interval_ms: int
    schedule_grace_ms: int
    ops_session_ttl_s: int
    api_rate_limit: str | None
    api_shop_concurrency: int
    api_shop_heavy_concurrency: int
    web_switch_interval_us: int
    import_processes: int
    api_refusal_hold_ms: int
    max_campaign_recipients: int
    recipient_chunk_size: int
    shopify_api_secret: str | None
    inbound_match_days: int
    # Quiet hours of a shop created without any (minutes after local midnight), or None.
    quiet_hours_default: tuple[int, int] | None
    quiet_hours_recheck_ms: int
    delivery_report_retention_days: int
    test_clock_offset_key: str | None
    report_apply_delay_ms: int
    report_ingest_max_pending: int
    report_ingest_max_wait_ms: int
    batch_time_slice_ms: int
    # Where the provider posts delivery reports: the `reports` process's base URL, or None
    # for the web's (PUBLIC_BASE_URL).
    reports_base_url: str | None
    # The chaos suite's armed fault points: (point, action, probability); empty in production.
    chaos_faults: tuple[tuple[str, str, float], ...] = ()

    @property
    def send_time_limit_ms(self) -> int:
        """The send actor's time limit: shorter than the claim timeout, so a batch still
        running can never race the reconciler that resolves its claims."""
        return max(1000, self.claim_timeout_ms * 4 // 5)

    @property
    def default_sender(self) -> str:
        """The sender of a shop that has none: MITTO_SENDER, else the product's name. Replies
        written to it are matched by it too (`service.inbound`), set or not."""
        return self.mitto_sender or FALLBACK_SENDER

    @property
    def broker_kind(self) -> str:
        """Which broker Dramatiq runs on: `rabbitmq` when BROKER_URL is set, else `redis`."""
        return "rabbitmq" if self.broker_url else "redis"

    @property
    def send_window_worst_ms(self) -> int:
        """The longest one window of a batch can take: its provider calls at their connect
        and read timeouts, and the claim and persist around them. A batch starts a window
        only while one this long still ends before the time limit."""
        return (
            self.provider_connect_timeout_ms
            + self.provider_read_timeout_ms
            + SEND_WINDOW_MARGIN_MS
            + self.provider_rate_departure_ms
        )

    @property
    def provider_rate_departure_ms(self) -> int:
        """The longest a call admitted ahead of the budget waits on its pool thread for it."""
        return 2 * self.provider_rate_lookahead_ms

    @property
    def secret_values(self) -> tuple[str, ...]:
        """The configured secrets, which no log line may show."""
        return tuple(
            value
            for value in (
                self.secret_key,
                self.admin_token,
                self.dlr_webhook_secret,
                self.mitto_api_key,
                self.shopify_api_secret,
            )
            if value
        )


# The longest duration any `*_MS` setting may be: ten years. Beyond some thousand years a time
# computed from it falls outside the calendar (`now - grace` raised OverflowError on every
# launch); nobody means more than this, "never" included.
MAX_DURATION_MS = 10 * 365 * 86_400_000


def _int(
    name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> Callable[[Mapping[str, str]], int]:
    if maximum is None and name.endswith("_MS"):
        maximum = MAX_DURATION_MS

    def parse(env: Mapping[str, str]) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            # ASCII only: int() also reads other scripts' digits ("٥"), a value nobody means.
            if not raw.isascii():
                raise ValueError(raw)
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}={value} must be at most {maximum}")
        return value

    return parse


def _bool(name: str, default: bool) -> Callable[[Mapping[str, str]], bool]:
    truthy, falsy = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

    def parse(env: Mapping[str, str]) -> bool:
        raw = env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in truthy:
            return True
        if raw in falsy:
            return False
        raise ConfigError(f"{name}={raw!r} must be true or false")

    return parse


def _url(name: str, schemes: tuple[str, ...], default: str | None = None):
    """A URL of one of `schemes`, its port a number and, by scheme, what its client would
    otherwise read wrongly or fail on at first use (`_url_problem`). A message never repeats
    the value's password."""

    def parse(env: Mapping[str, str]) -> str | None:
        raw = env.get(name, "").strip() or default
        if raw is None:
            return None
        parsed = urlparse(raw)
        shown = raw.replace(parsed.password, "[redacted]") if parsed.password else raw
        if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
            raise ConfigError(
                f"{name}={shown!r} must be a URL starting with {' or '.join(schemes)}://"
            )
        problem = _url_problem(raw)
        if problem:
            raise ConfigError(f"{name}={shown!r} {problem}")
        return raw.rstrip("/") if parsed.scheme.startswith("http") else raw

    return parse


def _url_problem(raw: str) -> str | None:
    """What is wrong with a URL whose scheme is right, or None. A probe saw a port `abc` stop
    every process with a traceback at its first connection, `?sslmod=` (a typo) fail every
    repair, `MITTO_API_BASE=http:foo` leave every send `not_sent` and retried with no error,
    and `REDIS_URL=redis://host:6379/notadb` read silently as database 0: another
    deployment's leader lock and queues."""
    parsed = urlparse(raw)
    if parsed.scheme in ("postgres", "postgresql"):
        import psycopg2.extensions

        try:
            ports = psycopg2.extensions.parse_dsn(raw).get("port", "")
        except psycopg2.ProgrammingError as error:
            return f"is not a PostgreSQL URL libpq reads: {str(error).strip()}"
        if ports and not all(_is_port(port) for port in ports.split(",")):
            return "must have a port from 1 to 65535"
        return None
    try:
        port = parsed.port
    except ValueError:  # not a number, or over 65535
        port = 0
    if port is not None and not 1 <= port <= 65535:
        return "must have a port from 1 to 65535"
    if parsed.scheme in ("http", "https") and not parsed.hostname:
        return f"must name a host ({parsed.scheme}://host[:port][/path])"
    # Paths are appended to it (`/r/{code}`, `/sms`): after a query or a fragment they are
    # no longer a path (`https://x/sms?a=1/r/CODE`), and a space is no URL at all.
    if parsed.scheme in ("http", "https") and (
        parsed.query or parsed.fragment or "?" in raw or "#" in raw or any(c.isspace() for c in raw)
    ):
        return f"must be {parsed.scheme}://host[:port][/path], without a query, fragment or space"
    if parsed.scheme in ("redis", "rediss"):
        database = parsed.path.strip("/")
        if database and not (database.isascii() and database.isdigit()):
            return "must end with a database number (/0, /1, ...) or nothing"
    if parsed.scheme in ("redis", "rediss", "unix"):
        for value in parse_qs(parsed.query).get("db", []):
            if not (value.isascii() and value.isdigit()):
                return "must give db= as a database number"
    return None


def _database_url(name: str) -> Callable[[Mapping[str, str]], str | None]:
    """A PostgreSQL DSN as libpq reads it: a postgres(ql):// URL (`_url`) or the key=value
    form (`host=db user=app dbname=sms`), whose ports are checked alike."""
    as_url = _url(name, ("postgres", "postgresql"))

    def parse(env: Mapping[str, str]) -> str | None:
        raw = env.get(name, "").strip()
        if "://" in raw or "=" not in raw:
            return as_url(env)
        import psycopg2.extensions

        shown = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1[redacted]", raw)
        try:
            ports = psycopg2.extensions.parse_dsn(raw).get("port", "")
        except psycopg2.ProgrammingError as error:
            raise ConfigError(
                f"{name}={shown!r} is not a PostgreSQL DSN libpq reads: {str(error).strip()}"
            ) from None
        if ports and not all(_is_port(port) for port in ports.split(",")):
            raise ConfigError(f"{name}={shown!r} must have a port from 1 to 65535")
        return raw

    return parse


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def _broker_url(name: str) -> Callable[[Mapping[str, str]], str | None]:
    """`amqp://` or `amqps://`, as pika reads it (unset: Dramatiq uses REDIS_URL's Redis).
    The message never repeats the value: its password is a secret."""

    def parse(env: Mapping[str, str]) -> str | None:
        raw = env.get(name, "").strip()
        if not raw:
            return None
        scheme = urlparse(raw).scheme
        if scheme not in ("amqp", "amqps"):
            raise ConfigError(
                f"{name} must be an amqp:// or amqps:// URL (it starts with"
                f" {scheme + '://' if scheme else 'no scheme'}); unset it to run"
                " Dramatiq on REDIS_URL's Redis"
            )
        import pika

        try:
            pika.URLParameters(raw)
        except Exception as error:  # noqa: BLE001 - pika says what is wrong in ValueError & co
            reason = str(error).replace(urlparse(raw).password or "\0", "[redacted]")
            raise ConfigError(f"{name} is not a valid RabbitMQ URL: {reason}") from None
        return raw

    return parse


def _text(name: str, default: str | None = None):
    def parse(env: Mapping[str, str]) -> str | None:
        return env.get(name, "").strip() or default

    return parse


# A shop's `sender` is refused over this (`api/schemas.py`): a sender id the provider takes.
MAX_SENDER_LENGTH = 15


def _sender(name: str):
    """A sender id as a shop's may be: MITTO_SENDER longer would be every sender-less shop's
    sender, which the provider refuses (a probe saw 40 characters accepted)."""

    def parse(env: Mapping[str, str]) -> str | None:
        value = _text(name)(env)
        if value is not None and len(value) > MAX_SENDER_LENGTH:
            raise ConfigError(
                f"{name}={value!r} must be at most {MAX_SENDER_LENGTH} characters, as a shop's"
                " sender"
            )
        return value

    return parse


def _rate(name: str, default: str, per_second: bool = False):
    """`N/second`, `N per minute`, ... (the `limits` library's notation); `0` or `off`: none.
    With `per_second`, a bare integer N also means N/second."""

    def parse(env: Mapping[str, str]) -> str | None:
        raw = env.get(name, "").strip() or default
        if raw.lower() in ("0", "off", "none"):
            return None
        if per_second and raw.isdigit():
            if int(raw) == 0:
                return None
            raw = f"{int(raw)}/second"
        from limits import parse_many

        try:
            items = parse_many(raw)
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} must be a rate such as 100/second or 0 (off)"
            ) from None
        if len(items) != 1:
            # `limits.parse` keeps the first of "10/second;20/minute" and drops the rest, so
            # the second limit was accepted and never enforced.
            raise ConfigError(f"{name}={raw!r} must be one rate such as 100/second, not several")
        item = items[0]
        if item.amount < 1:
            raise ConfigError(f"{name}={raw!r} must allow at least 1 request")
        return raw

    return parse


def parse_clock_time(raw: str) -> int:
    """`HH:MM` (24 h) as minutes after midnight; ValueError otherwise."""
    hours, sep, minutes = raw.strip().partition(":")
    if not sep or len(minutes) != 2 or not (hours.isdigit() and minutes.isdigit()):
        raise ValueError(f"{raw!r} is not a time HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"{raw!r} is not a time of day (00:00 to 23:59)")
    return value


def _quiet_hours(name: str, default: str) -> Callable[[Mapping[str, str]], tuple[int, int] | None]:
    """`HH:MM-HH:MM` (local start and end; crossing midnight when start > end), or `off`."""

    def parse(env: Mapping[str, str]) -> tuple[int, int] | None:
        raw = env.get(name, "").strip() or default
        if raw.lower() in ("off", "none"):
            return None
        start, sep, end = raw.partition("-")
        try:
            if not sep:
                raise ValueError("no '-'")
            window = parse_clock_time(start), parse_clock_time(end)
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} must be HH:MM-HH:MM (e.g. 21:00-08:00) or off"
            ) from None
        if window[0] == window[1]:
            raise ConfigError(f"{name}={raw!r} must start and end at different times")
        return window

    return parse


def _faults(name: str) -> Callable[[Mapping[str, str]], tuple[tuple[str, str, float], ...]]:
    """`point=action:probability,...` (`service.infra.faults`: points and actions)."""

    def parse(env: Mapping[str, str]) -> tuple[tuple[str, str, float], ...]:
        from service.infra.faults import ACTIONS, POINTS

        raw = env.get(name, "").strip()
        faults = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            point, _, rest = item.partition("=")
            action, _, chance = rest.partition(":")
            point, action = point.strip(), action.strip()
            if point not in POINTS:
                raise ConfigError(
                    f"{name}: unknown fault point {point!r} (one of {', '.join(POINTS)})"
                )
            if action not in ACTIONS:
                raise ConfigError(
                    f"{name}: {point} needs an action, kill or raise (got {action!r})"
                )
            try:
                probability = float(chance) if chance.strip() else 1.0
            except ValueError:
                raise ConfigError(
                    f"{name}: {point}'s probability {chance!r} is not a number"
                ) from None
            if not 0.0 <= probability <= 1.0:
                raise ConfigError(f"{name}: {point}'s probability {probability} is not in [0, 1]")
            faults.append((point, action, probability))
        return tuple(faults)

    return parse


def _secret(name: str, min_length: int) -> Callable[[Mapping[str, str]], str | None]:
    def parse(env: Mapping[str, str]) -> str | None:
        value = env.get(name, "").strip()
        if not value:
            return None
        if len(value) < min_length:
            # The value itself stays out of the message: it is a secret, even a bad one.
            raise ConfigError(
                f"{name} must be at least {min_length} characters (it has {len(value)})"
            )
        return value

    return parse


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration from `env` (the process environment by default)."""
    env = os.environ if env is None else env
    port = _int("PORT", 8000, 1)(env)
    if port > 65535:
        raise ConfigError(f"PORT={port} must be at most 65535")
    values = {
        "database_url": _database_url("DATABASE_URL")(env) or "",
        "redis_url": _url("REDIS_URL", ("redis", "rediss", "unix"))(env) or "",
        # Dramatiq's broker when set (RabbitMQ); Redis stays required for everything else.
        "broker_url": _broker_url("BROKER_URL")(env),
        "port": port,
        "mitto_api_base": _url("MITTO_API_BASE", ("http", "https"), "https://rest.mittoapi.net")(
            env
        ),
        "mitto_api_key": _text("MITTO_API_KEY")(env),
        "mitto_sender": _sender("MITTO_SENDER")(env),
        "public_base_url": _url("PUBLIC_BASE_URL", ("http", "https"), f"http://localhost:{port}")(
            env
        ),
        # Unset disables the admin API and the ops page, or the delivery-report webhook.
        "admin_token": _secret("ADMIN_TOKEN", 24)(env),
        "dlr_webhook_secret": _secret("DLR_WEBHOOK_SECRET", 24)(env),
        # Signs unsubscribe tokens. No default: one written in the code would let anyone forge
        # every contact's opt-out; `runtime.check` requires it of every process that signs or
        # checks them, and only `astronote up`/`demo` generate one (astronote/secrets_store.py).
        "secret_key": _secret("SECRET_KEY", 32)(env) or "",
        "run_scheduler": _bool("RUN_SCHEDULER", True)(env),
        "scheduler_lock_ttl_ms": _int("SCHEDULER_LOCK_TTL_MS", 15000, 1000)(env),
        "scheduler_lock_retry_ms": _int("SCHEDULER_LOCK_RETRY_MS", 5000, 100)(env),
        "send_batch_size": _int("SEND_BATCH_SIZE", 500, 1)(env),
        # Fair admission (service/admission.py): batches of one shop published and not yet
        # finished. Twice the default worker threads (2 processes x 8), so a shop sending
        # alone always has a batch waiting for each thread that frees up (with exactly as
        # many, each thread waited for the next admission and the consumer's poll), few
        # enough that another shop's first batch waits behind at most this many of each
        # busy shop's.
        "shop_batches_in_flight": _int("SHOP_BATCHES_IN_FLIGHT", 32, 1)(env),
        # 64 calls in flight per process hide 100 ms of provider latency up to ~640 msg/s each.
        "send_concurrency": _int("SEND_CONCURRENCY", 64, 1)(env),
        # Answers to STOP/START/HELP one worker process tries at once: each holds a worker
        # thread for the provider's answer, so a wave of them must leave threads to the
        # delivery reports and the batches (the rest wait on the queue, no try spent).
        "reply_concurrency": _int("REPLY_CONCURRENCY", 2, 1)(env),
        # Messages per second (or `N/minute`, ...) for the provider account, shared by every
        # worker; a bare integer is per second. Unset or 0: none (a 429 still cools it down).
        "provider_rate_limit": _rate("PROVIDER_RATE_LIMIT", "0", per_second=True)(env),
        # The same for each sender name on its own (a shop's sender among others).
        "sender_rate_limit": _rate("SENDER_RATE_LIMIT", "0", per_second=True)(env),
        # A send counts against those limits this much longer than their period: the time
        # calls take to reach the provider varies, and the provider counts when they arrive.
        "provider_rate_margin_ms": _int("PROVIDER_RATE_MARGIN_MS", 30, 0, 1000)(env),
        # How far ahead of the provider's budget a window is admitted: claimed and composed
        # while the budget frees, its call then departs when it has (waiting at most twice
        # this long on the call's pool thread; longer and the batch goes back on the queue).
        # 0: admitted only once the budget is free (each refill then waits for the batch's
        # trip back through the queue).
        "provider_rate_lookahead_ms": _int("PROVIDER_RATE_LOOKAHEAD_MS", 60, 0, 200)(env),
        # While several shops ask for a capped account at once, each gets an equal share of
        # its rate (service/infra/fair_share.py); false: first come, first served.
        "provider_fair_share": _bool("PROVIDER_FAIR_SHARE", True)(env),
        "provider_connect_timeout_ms": _int("PROVIDER_CONNECT_TIMEOUT_MS", 3000, 100)(env),
        "provider_read_timeout_ms": _int("PROVIDER_READ_TIMEOUT_MS", 15000, 100)(env),
        "claim_timeout_ms": _int("CLAIM_TIMEOUT_MS", 300000, 1000)(env),
        "reconcile_interval_ms": _int("RECONCILE_INTERVAL_MS", 30000, 100)(env),
        "status_refresh_interval_ms": _int("STATUS_REFRESH_INTERVAL_MS", 30000, 100)(env),
        # The webhook only stores reports; the applier runs at most once per this many ms
        # (a burst of reports publishes one applier message), and this long after the first
        # report of the burst: the delay a report waits before its effect shows.
        "report_apply_delay_ms": _int("REPORT_APPLY_DELAY_MS", 150, 10, 10_000)(env),
        # Reports one web process holds waiting for (or in) their INSERT; the webhook answers
        # a request beyond it 503 with Retry-After at once, and the provider retries later.
        "report_ingest_max_pending": _int("REPORT_INGEST_MAX_PENDING", 20_000, 1)(env),
        # A report request that waited longer than this for a web thread is answered 503 at
        # once (0: never): its sender has likely timed out and will post it again.
        "report_ingest_max_wait_ms": _int("REPORT_INGEST_MAX_WAIT_MS", 2000, 0)(env),
        # The base URL the provider is told to post delivery reports to (`callback`): where
        # the `reports` process (api/report_server.py) is reached. Unset: PUBLIC_BASE_URL.
        "reports_base_url": _url("REPORTS_BASE_URL", ("http", "https"))(env),
        "stuck_campaign_after_ms": _int("STUCK_CAMPAIGN_AFTER_MS", 300000, 1000)(env),
        # A campaign paused longer than this is listed by /health/full (a day by default): a
        # pause is the merchant's choice, but one forgotten holds its credits indefinitely.
        "paused_campaign_alert_ms": _int("PAUSED_CAMPAIGN_ALERT_MS", 86400000, 1000)(env),
        # A published batch not finished after this long is presumed lost (Redis flush, dead
        # worker) and is published again; the claim makes the duplicate harmless.
        "batch_stale_after_ms": _int("BATCH_STALE_AFTER_MS", 120000, 100)(env),
        # A delivery of a batch starts no new window after this long: its rest goes to the back
        # of the queue, so a worker thread is never a big campaign's for longer (a small shop's
        # batch, or a test send, waits for a thread at most about this long).
        "batch_time_slice_ms": _int("BATCH_TIME_SLICE_MS", 2000, 100)(env),
        "send_max_retries": _int("SEND_MAX_RETRIES", 20, 0)(env),
        # Dramatiq's Redis broker requeues a dead worker's messages after this much silence.
        "broker_heartbeat_timeout_ms": _int("BROKER_HEARTBEAT_TIMEOUT_MS", 60000, 1000)(env),
        "broker_dead_message_ttl_ms": _int("BROKER_DEAD_MESSAGE_TTL_MS", 7 * 86400000, 1000)(env),
        # Out of a million broker commands, how many also sweep dead workers' messages back.
        "broker_maintenance_chance": _int("BROKER_MAINTENANCE_CHANCE", 10000, 0)(env),
        "db_max_connections": _int("DB_MAX_CONNECTIONS", 20, 1)(env),
        # How long after a campaign finished a delivery report can still prove that a message
        # of unknown outcome was sent (providers report within days); the campaign's
        # reservation holds those messages' credits exactly as long (service/reservations.py).
        "evidence_window_ms": _int("EVIDENCE_WINDOW_MS", 7 * 86400000, 0)(env),
        # How often the leading clock launches scheduled campaigns whose time has come.
        "schedule_interval_ms": _int("SCHEDULE_INTERVAL_MS", 10000, 100)(env),
        # A scheduled campaign found later than this past its time (say, after a long outage)
        # is failed with the reason rather than sent hours late without anyone deciding so.
        "schedule_grace_ms": _int("SCHEDULE_GRACE_MS", 3600000, 1000)(env),
        # How long an operator's `/ops` login lasts; a week at most, so a lost cookie expires.
        "ops_session_ttl_s": _int("OPS_SESSION_TTL_S", 8 * 3600, 60, 7 * 86400)(env),
        # Per shop, shared by every web process: enough for a dashboard polling progress and
        # an import script, not for one shop to take the API from the others.
        "api_rate_limit": _rate("API_RATE_LIMIT", "100/second")(env),
        # Requests of one shop in flight at once across every web process (0: no cap); below
        # the web threads of one process, so a shop's heavy imports leave threads for others.
        # 4, not 8: on 2 cores a hammering shop got as much done with 4 requests in flight as
        # with 8, and another shop's p99 was 2.5-4x lower (bench/RESULTS.md).
        "api_shop_concurrency": _int("API_SHOP_CONCURRENCY", 4, 0)(env),
        # Contact imports of one shop in flight at once across every web process (0: no cap
        # beyond API_SHOP_CONCURRENCY): one import already takes a core, so a shop's imports
        # use one core at a time whatever its number of clients; one client importing back to
        # back never meets it (bench/RESULTS.md, "Another shop's p99 under a hammering shop").
        "api_shop_heavy_concurrency": _int("API_SHOP_HEAVY_CONCURRENCY", 1, 0)(env),
        # The web process's GIL switch interval (sys.setswitchinterval), microseconds. A light
        # request gives the GIL up at each PostgreSQL or Redis call and may wait this long to
        # win it back from a CPU-bound request (an import); Python's default is 5000. With one
        # web process (so that another shop's requests always share its GIL with a shop's
        # import), 200 took their median from 21-22 ms to 12 ms (6.5 alone) at the same import
        # rate (bench/RESULTS.md, "The GIL a shop's import shares").
        "web_switch_interval_us": _int("WEB_SWITCH_INTERVAL_US", 200, 100, 100_000)(env),
        # Child processes of each web process that read contact imports (the CPU of a JSON or
        # CSV body's rows, off the GIL the process's other requests need: api/import_processes.py);
        # 0 reads them in the request's thread.
        "import_processes": _int("IMPORT_PROCESSES", 1, 0, 8)(env),
        # How long the web process leaves a connection unread after answering it 429 (at most
        # the answer's Retry-After; 0: not at all). A client ignoring Retry-After and asking
        # again at once on the same connection then waits out its refusal instead of spending
        # the cores on being refused hundreds of times a second. No thread is held meanwhile
        # (`api/workers.py`); a client that honours Retry-After never notices.
        "api_refusal_hold_ms": _int("API_REFUSAL_HOLD_MS", 1000, 0, 10_000)(env),
        # Enqueue refuses (422) a campaign with more eligible recipients, before inserting any:
        # an abuse cap on one request's work, not a business limit.
        "max_campaign_recipients": _int("MAX_CAMPAIGN_RECIPIENTS", 1_000_000, 1)(env),
        # Eligible contacts made recipients per transaction after the enqueue answered
        # (`service.creation`); an audience this size or smaller is created in the enqueue
        # itself. 20,000 took at most 0.58 s with their batches while the campaign sent
        # (bench/RESULTS.md), far below the 5 s a transaction may last; 1,000,000 is 50 chunks.
        "recipient_chunk_size": _int("RECIPIENT_CHUNK_SIZE", 20_000, 1, 200_000)(env),
        # The Shopify app's API secret: it signs the privacy webhooks (X-Shopify-Hmac-Sha256).
        # Unset disables them (404). Shopify's secrets are 32 characters or more.
        "shopify_api_secret": _secret("SHOPIFY_API_SECRET", 32)(env),
        # A reply to the shared MITTO_SENDER is for every shop that messaged the number from
        # it within this many days (a shop's own sender needs no such guess).
        "inbound_match_days": _int("INBOUND_MATCH_DAYS", 30, 1, 3650)(env),
        # The quiet hours of a shop created without saying (SPEC 11): 21:00-08:00, or `off`.
        "quiet_hours_default": _quiet_hours("QUIET_HOURS_DEFAULT", "21:00-08:00")(env),
        # A batch waiting for quiet hours to end is back on the queue at the opening, or after
        # this long if that is sooner, to look again (a changed setting, a lost message):
        # Dramatiq workers hold delayed messages in memory, which hours-long delays would pin.
        "quiet_hours_recheck_ms": _int("QUIET_HOURS_RECHECK_MS", 300000, 100)(env),
        # Examined delivery reports older than this many days are dropped by the reconcile
        # (service/retention.py); 0 keeps them for ever. Past the evidence window, nothing
        # reads them: what they said is on their recipients.
        "delivery_report_retention_days": _int("DELIVERY_REPORT_RETENTION_DAYS", 30, 0, 3650)(env),
        # Tests only, never in production: the Redis key of a time offset every process adds
        # to its clock (`service/infra/clock.py`), so a test moves time without sleeping.
        "test_clock_offset_key": _text("TEST_CLOCK_OFFSET_KEY")(env),
        # The chaos suite only (bench/chaos.py): fault points to arm, `point=kill:0.05,...`.
        "chaos_faults": _faults("CHAOS_FAULTS")(env),
    }
    settings = Settings(**values)
    slowest_look = (
        settings.schedule_interval_ms
        + settings.scheduler_lock_ttl_ms
        + settings.scheduler_lock_retry_ms
    )
    if settings.schedule_grace_ms < slowest_look:
        # The launch job looks every interval, and after a leader's failover only once the
        # lock expired and a standby tried again: a shorter grace fails campaigns nobody was
        # late to launch (a probe saw three fail at a failover with a 2 s grace and 5 s retry).
        raise ConfigError(
            f"SCHEDULE_GRACE_MS={settings.schedule_grace_ms} must be at least "
            f"SCHEDULE_INTERVAL_MS={settings.schedule_interval_ms} + SCHEDULER_LOCK_TTL_MS="
            f"{settings.scheduler_lock_ttl_ms} + SCHEDULER_LOCK_RETRY_MS="
            f"{settings.scheduler_lock_retry_ms} ({slowest_look}): the clock looks for due "
            "campaigns every interval, and a standby clock only once the leader's lock expired"
            " and its next try came"
        )
    retention_ms = settings.delivery_report_retention_days * 86_400_000
    if retention_ms and retention_ms < settings.evidence_window_ms:
        # A report is evidence for its campaign's unknown outcomes that long after the
        # campaign finished: dropped sooner, a late upgrade would find nothing.
        raise ConfigError(
            f"DELIVERY_REPORT_RETENTION_DAYS={settings.delivery_report_retention_days} must "
            f"cover EVIDENCE_WINDOW_MS={settings.evidence_window_ms} (or be 0: kept for ever)"
        )
    if settings.send_window_worst_ms >= settings.send_time_limit_ms:
        # Not even one window of calls fits in the time limit: a batch would be interrupted
        # with calls in flight, or its claims resolved by the reconciler while it runs.
        raise ConfigError(
            f"PROVIDER_CONNECT_TIMEOUT_MS={settings.provider_connect_timeout_ms} + "
            f"PROVIDER_READ_TIMEOUT_MS={settings.provider_read_timeout_ms} (one window of "
            f"provider calls, plus {SEND_WINDOW_MARGIN_MS} ms to claim and persist it and "
            f"{settings.provider_rate_departure_ms} ms of departure, twice "
            f"PROVIDER_RATE_LOOKAHEAD_MS) must be "
            f"shorter than the send time limit, {settings.send_time_limit_ms} ms (4/5 of "
            f"CLAIM_TIMEOUT_MS={settings.claim_timeout_ms}, at least 1000)"
        )
    return settings


def load_or_exit(env: Mapping[str, str] | None = None) -> Settings:
    """`load()`, but an invalid value ends the process with one line naming the variable."""
    try:
        return load(env)
    except ConfigError as error:
        exit_with_error(str(error))


def _start_time(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot, /proc/pid/stat's 22nd
    field), or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def exit_with_error(problem: str) -> NoReturn:
    """End the process with one line naming the problem. The worker's processes (the dramatiq
    command's children, which each read the configuration) say it once between them: the
    first to create the marker named after their parent prints (a probe saw the line once per
    process, run together with the next). One write, so lines never interleave."""
    parent = multiprocessing.parent_process()
    started = _start_time(parent.pid) if parent is not None and parent.pid else None
    if parent is not None and started is not None:
        # The parent's pid and start time: a pid used again (a container's pid 1 restarted
        # with /tmp kept) names another marker, so its error is said again.
        marker = Path(tempfile.gettempdir()) / f"astronote-config-error-{parent.pid}-{started}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise SystemExit(2) from None
        except OSError:
            pass  # no marker: every process says it, rather than none
    os.write(2, f"astronote: configuration error: {problem}\n".encode(errors="replace"))
    raise SystemExit(2) from None


_current: Settings | None = None


def settings() -> Settings:
    """The process-wide settings, loaded once (exits with one line if invalid)."""
    global _current
    if _current is None:
        _current = load_or_exit()
    return _current


def override(new: Settings | None) -> None:
    """Replace the process-wide settings (tests and the CLI's embedded servers)."""
    global _current
    _current = new
