"""Configuration: an invalid value stops a process with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from astronote import processes
from models import database
from service.infra import config
from service.infra.config import ConfigError
from tests.conftest import ROOT, SECRET_KEY

# Every process that signs or checks unsubscribe links: web, worker, clock, `astronote reconcile`.
SIGNING_PROCESSES = {
    "web": ["-m", "gunicorn", "api.wsgi:app", "-b", "127.0.0.1:0", "-w", "1"],
    "worker": ["-m", "dramatiq", "actors", "--processes", "1", "--threads", "1"],
    "clock": ["-m", "scheduler"],
    "reconcile": ["-m", "astronote", "reconcile"],
}


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("PORT", "eighty", "PORT='eighty' is not an integer"),
        ("SEND_BATCH_SIZE", "0", "SEND_BATCH_SIZE=0 must be at least 1"),
        ("RUN_SCHEDULER", "maybe", "RUN_SCHEDULER='maybe' must be true or false"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL='mysql://x/y' must be a URL"),
        ("MITTO_API_BASE", "ftp://x", "MITTO_API_BASE='ftp://x' must be a URL"),
        (
            "CLAIM_TIMEOUT_MS",
            "2000",
            "must be shorter than the send time limit, 1600 ms (4/5 of CLAIM_TIMEOUT_MS=2000",
        ),
        # shorter than the launch job's look: a campaign due just after one was failed as late
        (
            "SCHEDULE_GRACE_MS",
            "1000",
            "SCHEDULE_GRACE_MS=1000 must be at least SCHEDULE_INTERVAL_MS=10000 +"
            " SCHEDULER_LOCK_TTL_MS=15000 + SCHEDULER_LOCK_RETRY_MS=5000 (30000)",
        ),
        # a standby takes the lock only at its next try: three campaigns failed at a failover
        ("SCHEDULE_GRACE_MS", "29999", "(30000)"),
        # read at the first connection, with a traceback, or silently as something else
        ("DATABASE_URL", "postgresql://127.0.0.1:abc/db", "must have a port from 1 to 65535"),
        ("DATABASE_URL", "postgresql://h:99999/db", "must have a port from 1 to 65535"),
        ("DATABASE_URL", "postgresql://h/db?sslmod=require", "invalid URI query parameter"),
        ("DATABASE_URL", "postgresql://u:hunter2pw@h:x/db", "u:[redacted]@h:x/db"),
        # libpq's key=value form (a probe: refused as "must be a URL"), checked alike
        ("DATABASE_URL", "host=h port=abc dbname=x", "must have a port from 1 to 65535"),
        ("DATABASE_URL", "host=h password=hunter2pw junk", "password=[redacted] junk"),
        ("DATABASE_URL", "host=h password='a b' junk", "password=[redacted] junk"),
        ("REDIS_URL", "redis://127.0.0.1:abc/0", "must have a port from 1 to 65535"),
        ("REDIS_URL", "redis://127.0.0.1:6379/notadb", "must end with a database number"),
        ("REDIS_URL", "redis://127.0.0.1:6379/1/x", "must end with a database number"),
        ("REDIS_URL", "unix:///tmp/r.sock?db=x", "must give db= as a database number"),
        ("MITTO_API_BASE", "http:foo", "must name a host"),
        # links are the base plus a path: after a query, `https://x/sms?a=1/r/CODE` (a probe)
        ("PUBLIC_BASE_URL", "https://example.com/sms?x=1", "without a query, fragment or space"),
        ("PUBLIC_BASE_URL", "https://example.com/sms#frag", "without a query, fragment or space"),
        ("PUBLIC_BASE_URL", "https://example.com/?", "without a query, fragment or space"),
        ("PUBLIC_BASE_URL", "http://exa mple.com", "without a query, fragment or space"),
        ("MITTO_API_BASE", "https://rest.example/v1?k=1", "without a query, fragment or space"),
        ("REPORTS_BASE_URL", "https://reports.example/?x=1", "without a query, fragment or space"),
        ("REPORTS_BASE_URL", "reports.example", "must be a URL starting with http or https"),
        ("MITTO_API_BASE", "http://127.0.0.1:abc", "must have a port from 1 to 65535"),
        ("MITTO_SENDER", "S" * 16, "must be at most 15 characters"),
        # `now - grace` fell outside the calendar: OverflowError at every launch
        ("SCHEDULE_GRACE_MS", "100000000000000", "must be at most 315360000000"),
        ("EVIDENCE_WINDOW_MS", "100000000000000", "must be at most 315360000000"),
        ("MAX_CAMPAIGN_RECIPIENTS", "0", "MAX_CAMPAIGN_RECIPIENTS=0 must be at least 1"),
        ("MAX_CAMPAIGN_RECIPIENTS", "1e6", "MAX_CAMPAIGN_RECIPIENTS='1e6' is not an integer"),
        ("INBOUND_MATCH_DAYS", "0", "INBOUND_MATCH_DAYS=0 must be at least 1"),
        ("SEND_BATCH_SIZE", "\u0665", "SEND_BATCH_SIZE='\u0665' is not an integer"),
        # `limits.parse` kept the first of several rates; the others were never enforced
        ("PROVIDER_RATE_LIMIT", "10/second;20/minute", "must be one rate such as 100/second"),
        ("SENDER_RATE_LIMIT", "10/second, 20/minute", "must be one rate such as 100/second"),
        ("API_RATE_LIMIT", "10 per second; 5 per minute", "must be one rate such as 100/second"),
        ("PROVIDER_RATE_LIMIT", "ten/second", "must be a rate such as 100/second"),
    ],
)
def test_an_invalid_value_is_named(name, value, says):
    with pytest.raises(ConfigError, match=None) as error:
        config.load({name: value})
    assert says in str(error.value)


@pytest.mark.parametrize(
    "name, minimum",
    [
        ("SECRET_KEY", 32),
        ("ADMIN_TOKEN", 24),
        ("DLR_WEBHOOK_SECRET", 24),
        ("SHOPIFY_API_SECRET", 32),
    ],
)
def test_a_short_secret_is_named_without_its_value(name, minimum):
    # Given a secret one character shorter than its minimum
    short = "s3cr3t-" + "x" * (minimum - 8)
    # When the configuration is loaded
    with pytest.raises(ConfigError) as error:
        config.load({name: short})
    # Then the error names the variable and the length, and does not print the secret
    assert f"{name} must be at least {minimum} characters (it has {minimum - 1})" == str(
        error.value
    )
    assert short not in str(error.value)


def test_secrets_of_the_minimum_length_are_accepted_and_unset_ones_disable_their_feature():
    settings = config.load({"SECRET_KEY": "k" * 32, "ADMIN_TOKEN": "a" * 24})
    assert (settings.secret_key, settings.admin_token) == ("k" * 32, "a" * 24)
    assert settings.dlr_webhook_secret is None and settings.shopify_api_secret is None
    assert config.load({}).secret_key == ""  # no default: `runtime.check` requires it


def test_defaults_follow_the_contract():
    settings = config.load({})
    assert (
        settings.send_batch_size,
        settings.claim_timeout_ms,
        settings.run_scheduler,
        settings.scheduler_lock_ttl_ms,
        settings.scheduler_lock_retry_ms,
    ) == (500, 300000, True, 15000, 5000)
    assert settings.send_time_limit_ms < settings.claim_timeout_ms
    assert settings.public_base_url == "http://localhost:8000"
    assert settings.max_campaign_recipients == 1_000_000
    assert config.load({"MAX_CAMPAIGN_RECIPIENTS": "5000"}).max_campaign_recipients == 5000
    assert settings.inbound_match_days == 30


def test_a_window_of_calls_that_cannot_end_within_the_send_time_limit_is_refused():
    # Given provider timeouts whose sum (one window of calls at worst) exceeds the send
    # actor's time limit, 4/5 of the claim timeout
    env = {"CLAIM_TIMEOUT_MS": "8000", "PROVIDER_READ_TIMEOUT_MS": "4000"}
    # When the configuration is loaded
    with pytest.raises(ConfigError) as error:
        config.load(env)
    # Then it is refused with one line naming every variable involved
    message = str(error.value)
    assert "\n" not in message
    for says in (
        "PROVIDER_CONNECT_TIMEOUT_MS=3000",
        "PROVIDER_READ_TIMEOUT_MS=4000",
        "CLAIM_TIMEOUT_MS=8000",
        "6400 ms",
    ):
        assert says in message


def test_short_timeouts_that_leave_room_for_one_window_are_valid():
    settings = config.load(
        {"CLAIM_TIMEOUT_MS": "8000", "PROVIDER_READ_TIMEOUT_MS": "3000", "SEND_BATCH_SIZE": "50"}
    )
    assert settings.send_window_worst_ms < settings.send_time_limit_ms == 6400


def test_a_worker_with_no_room_for_a_window_stops_with_one_line():
    env = {
        **os.environ,
        "CLAIM_TIMEOUT_MS": "8000",
        "PROVIDER_READ_TIMEOUT_MS": "6000",
        "DATABASE_URL": "postgresql://x/y",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "PROVIDER_READ_TIMEOUT_MS=6000" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# SECRET_KEY set, as every process will need it.
KEY = {"SECRET_KEY": "s" * 40}


def test_a_paused_campaign_is_reported_after_a_day_unless_configured():
    assert config.load(KEY).paused_campaign_alert_ms == 24 * 3600 * 1000
    configured = config.load({**KEY, "PAUSED_CAMPAIGN_ALERT_MS": "60000"})
    assert configured.paused_campaign_alert_ms == 60000
    with pytest.raises(ConfigError, match="PAUSED_CAMPAIGN_ALERT_MS='1d' is not an integer"):
        config.load({**KEY, "PAUSED_CAMPAIGN_ALERT_MS": "1d"})


def test_an_operator_session_lasts_eight_hours_unless_configured():
    assert config.load(KEY).ops_session_ttl_s == 8 * 3600
    assert config.load({**KEY, "OPS_SESSION_TTL_S": "900"}).ops_session_ttl_s == 900


@pytest.mark.parametrize(
    "value, says",
    [
        ("30", "OPS_SESSION_TTL_S=30 must be at least 60"),
        ("8h", "OPS_SESSION_TTL_S='8h' is not an integer"),
        ("31536000", "OPS_SESSION_TTL_S=31536000 must be at most 604800"),
    ],
)
def test_an_operator_session_lifetime_out_of_bounds_is_named(value, says):
    with pytest.raises(ConfigError) as error:
        config.load({**KEY, "OPS_SESSION_TTL_S": value})
    assert says in str(error.value)


@pytest.mark.parametrize(
    "command", [["-m", "astronote", "migrate"], ["-m", "scheduler"], ["-m", "dramatiq", "actors"]]
)
def test_every_process_stops_with_one_line_and_no_traceback(command):
    env = {
        **os.environ,
        "SEND_BATCH_SIZE": "lots",
        "DATABASE_URL": "postgresql://x/y",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "SEND_BATCH_SIZE='lots' is not an integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_workers_processes_name_a_configuration_error_once_between_them():
    # Given the Procfile's worker with three processes, each reading the configuration
    env = {**os.environ, "SEND_BATCH_SIZE": "lots"}
    argv = processes.command("worker", {"WORKER_PROCESSES": "3"}, options={"--threads": "1"})
    # When it starts, Then the error is said once, on a line of its own (before: once per
    # process, run together with dramatiq's next line), then dramatiq's shut down
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "astronote: configuration error: SEND_BATCH_SIZE='lots' is not an integer"
    assert len(lines) == 2 and "exited unexpectedly" in lines[1], done.stderr


def run_process(command: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """`command` against unreachable servers, without SECRET_KEY unless `env` gives one."""
    environment = {name: value for name, value in os.environ.items() if name != "SECRET_KEY"}
    environment.update(
        {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://127.0.0.1:1/0", **env}
    )
    return subprocess.run(
        [sys.executable, *command],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_procfiles_web_checks_its_configuration_from_any_directory(tmp_path):
    # Given the Procfile's web command, started outside the checkout (an installed copy)
    argv = processes.command("web", options={"--bind": "127.0.0.1:0", "--workers": "1"})
    # When SECRET_KEY is unset
    done = run_process(argv[1:], cwd=tmp_path)
    # Then its master stops with the one line (its config is a module of the package, not a
    # file of the working directory that gunicorn would not find there)
    assert done.returncode != 0
    assert "astronote: configuration error: SECRET_KEY is not set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_procfiles_web_without_a_worker_process_stops_with_one_line():
    # Given WEB_CONCURRENCY=0 (gunicorn started, said it listened, and answered nothing)
    argv = processes.command("web", {"WEB_CONCURRENCY": "0"}, options={"--bind": "127.0.0.1:0"})
    done = run_process(argv[1:], SECRET_KEY=SECRET_KEY)
    # Then its master stops at once with one line naming the setting
    assert done.returncode == 2, done.stderr
    assert "astronote: configuration error: the web needs at least one worker process" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("process", SIGNING_PROCESSES)
def test_every_process_that_signs_links_stops_without_a_secret_key(process):
    # Given no SECRET_KEY in the environment
    # When the process starts
    done = run_process(SIGNING_PROCESSES[process])
    # Then it stops at once with one line naming the variable (gunicorn too: its master checks
    # before any worker, instead of replacing workers that exit, forever)
    assert done.returncode != 0
    assert "astronote: configuration error: SECRET_KEY is not set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_without_the_providers_key_stops_at_start():
    # Given everything but MITTO_API_KEY (every call would be refused 401, every campaign fail)
    done = run_process(SIGNING_PROCESSES["worker"], SECRET_KEY=SECRET_KEY, MITTO_API_KEY="")
    # Then it stops with one line naming it
    assert done.returncode != 0
    assert "astronote: configuration error: MITTO_API_KEY is not set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("process", SIGNING_PROCESSES)
def test_every_process_stops_on_a_short_secret_key(process):
    done = run_process(SIGNING_PROCESSES[process], SECRET_KEY=SECRET_KEY[:31])
    assert done.returncode != 0
    assert "SECRET_KEY must be at least 32 characters (it has 31)" in done.stderr, done.stderr
    assert SECRET_KEY[:31] not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "value, says",
    [
        (
            "redis://127.0.0.1:6379/0",
            "BROKER_URL must be an amqp:// or amqps:// URL (it starts with redis://)",
        ),
        ("guest:s3cret-pw@rabbit", "BROKER_URL must be an amqp:// or amqps:// URL"),
        ("amqp://guest:s3cret-pw@rabbit:five/", "BROKER_URL is not a valid RabbitMQ URL: Port"),
        (
            "amqp://guest:s3cret-pw@rabbit/?heartbeat=often",
            "BROKER_URL is not a valid RabbitMQ URL: Invalid heartbeat value 'often'",
        ),
        ("amqp://guest:s3cret-pw@rabbit/?prefetch=1", "Unknown URL parameter: 'prefetch'"),
    ],
)
def test_an_invalid_broker_url_is_named_without_its_password(value, says):
    with pytest.raises(ConfigError) as error:
        config.load({"BROKER_URL": value})
    assert says in str(error.value)
    assert "s3cret-pw" not in str(error.value)


def test_a_broker_url_chooses_rabbitmq_and_none_keeps_redis():
    assert config.load({}).broker_kind == "redis"
    assert config.load({"BROKER_URL": " "}).broker_url is None
    rabbit = config.load({"BROKER_URL": "amqps://u:p@rabbit.internal/%2Fastronote"})
    assert (rabbit.broker_kind, rabbit.broker_url) == (
        "rabbitmq",
        "amqps://u:p@rabbit.internal/%2Fastronote",
    )


@pytest.mark.parametrize("process", ["web", "worker", "clock"])
def test_every_process_stops_with_one_line_on_an_invalid_broker_url(process):
    # Given a BROKER_URL pika cannot read
    # When the process starts
    done = run_process(
        SIGNING_PROCESSES[process],
        SECRET_KEY=SECRET_KEY,
        BROKER_URL="amqp://guest:s3cret-pw@rabbit:five/",
    )
    # Then it stops at once with one line naming the variable, and not the password
    assert done.returncode != 0
    assert "astronote: configuration error: BROKER_URL is not a valid RabbitMQ URL" in (
        done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr


def test_the_release_step_names_an_unreachable_database_in_one_line():
    # Given a DATABASE_URL whose server does not answer
    done = run_process(["-m", "astronote", "migrate"], DATABASE_URL="postgresql://x@127.0.0.1:1/y")
    # Then `astronote migrate` fails with one line, no traceback
    assert done.returncode == 1
    assert "astronote migrate: PostgreSQL is unavailable:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_reconcile_with_postgresql_down_says_so_in_one_line_per_repair():
    # Given PostgreSQL unreachable
    done = run_process(
        ["-m", "astronote", "reconcile"],
        DATABASE_URL="postgresql://x@127.0.0.1:1/y",
        SECRET_KEY=SECRET_KEY,
    )
    # Then the repairs fail (exit 1, as documented) each in one line naming the outage, no
    # traceback: an outage is not a bug
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "repair failed" in output and "OperationalError" in output, output[-2000:]
    assert "Traceback" not in output and '"exc"' not in output, output[-2000:]


@pytest.mark.parametrize(
    "name, value",
    [
        ("DATABASE_URL", "postgresql:///astronote?host=/var/run/postgresql"),
        ("DATABASE_URL", "postgresql://postgres:@/postgres?host=/tmp/x/pgdata"),
        ("DATABASE_URL", "postgres://u:p%40ss@db.example:6432/app?sslmode=require"),
        ("DATABASE_URL", "postgresql://h1:5432,h2:5433/app?target_session_attrs=read-write"),
        ("DATABASE_URL", "host=127.0.0.1 user=postgres dbname=app"),
        ("DATABASE_URL", "host=/var/run/postgresql dbname=app password='a b' port=6432"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_URL", "rediss://:secret@cache.example:6380/3"),
        ("REDIS_URL", "unix:///tmp/redis.sock?db=2"),
        ("MITTO_API_BASE", "http://127.0.0.1:9090/"),
        ("MITTO_API_BASE", "https://rest.mittoapi.net/v1"),
        ("MITTO_SENDER", "S" * 15),
    ],
)
def test_unusual_but_valid_urls_and_senders_are_accepted(name, value):
    assert config.load({name: value})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:p%40ss@db.example:6432/sms?sslmode=require",
        "host=db.example port=6432 user=app password=p@ss dbname=sms sslmode=require",
    ],
)
def test_both_forms_of_database_url_connect_alike_with_keepalives(url):
    # A URL and libpq's key=value form go to libpq whole, with a connect timeout and TCP
    # keepalives (a vanished peer noticed in about a minute, not 2 h)
    params = database.connect_params(url)
    assert params == {"dsn": url, "dbname": None, **database.CONNECTION_DEFAULTS}
    assert make_dsn(**params) and parse_dsn(make_dsn(**params)) == {
        "dbname": "sms",
        "host": "db.example",
        "port": "6432",
        "user": "app",
        "password": "p@ss",
        "sslmode": "require",
        **database.CONNECTION_DEFAULTS,
    }
    # A DSN's own settings win
    own = url + ("&keepalives=0" if "://" in url else " keepalives=0")
    assert parse_dsn(make_dsn(**database.connect_params(own)))["keepalives"] == "0"


@pytest.mark.parametrize("process", ["worker", "clock"])
def test_a_redis_database_the_server_does_not_have_stops_the_process_with_one_line(
    process, service_urls
):
    # Given REDIS_URL naming database 99999 of a Redis with 16 (a number config cannot check)
    server = urlparse(service_urls[1])
    if server.scheme == "unix":  # the embedded Redis
        missing = f"unix://{server.path}?db=99999"
    else:
        missing = f"{server.scheme}://{server.netloc}/99999"
    done = run_process(
        SIGNING_PROCESSES[process],
        SECRET_KEY=SECRET_KEY,
        MITTO_API_KEY="k",
        DATABASE_URL=service_urls[0],
        REDIS_URL=missing,
    )
    # Then it stops at start naming REDIS_URL (before: a traceback a second, forever)
    assert done.returncode == 2
    assert "REDIS_URL names a database this Redis does not have" in done.stderr
    assert "Traceback" not in done.stderr
