"""Configuration: an invalid value stops a process with one line naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.infra import config
from service.infra.config import ConfigError


@pytest.mark.parametrize("name, value, says", [
    ("PORT", "eighty", "PORT='eighty' is not an integer"),
    ("SEND_BATCH_SIZE", "0", "SEND_BATCH_SIZE=0 must be at least 1"),
    ("RUN_SCHEDULER", "maybe", "RUN_SCHEDULER='maybe' must be true or false"),
    ("DATABASE_URL", "mysql://x/y", "DATABASE_URL='mysql://x/y' must be a URL"),
    ("MITTO_API_BASE", "ftp://x", "MITTO_API_BASE='ftp://x' must be a URL"),
    ("CLAIM_TIMEOUT_MS", "2000", "must be shorter than 4/5 of CLAIM_TIMEOUT_MS=2000"),
])
def test_an_invalid_value_is_named(name, value, says):
    with pytest.raises(ConfigError, match=None) as error:
        config.load({name: value})
    assert says in str(error.value)


def test_defaults_follow_the_contract():
    settings = config.load({})
    assert (settings.send_batch_size, settings.claim_timeout_ms, settings.run_scheduler,
            settings.scheduler_lock_ttl_ms, settings.scheduler_lock_retry_ms) == (
        500, 300000, True, 15000, 5000)
    assert settings.send_time_limit_ms < settings.claim_timeout_ms
    assert settings.public_base_url == "http://localhost:8000"


# SECRET_KEY set, as every process will need it.
KEY = {"SECRET_KEY": "s" * 40}


def test_an_operator_session_lasts_eight_hours_unless_configured():
    assert config.load(KEY).ops_session_ttl_s == 8 * 3600
    assert config.load({**KEY, "OPS_SESSION_TTL_S": "900"}).ops_session_ttl_s == 900


@pytest.mark.parametrize("value, says", [
    ("30", "OPS_SESSION_TTL_S=30 must be at least 60"),
    ("8h", "OPS_SESSION_TTL_S='8h' is not an integer"),
    ("31536000", "OPS_SESSION_TTL_S=31536000 must be at most 604800"),
])
def test_an_operator_session_lifetime_out_of_bounds_is_named(value, says):
    with pytest.raises(ConfigError) as error:
        config.load({**KEY, "OPS_SESSION_TTL_S": value})
    assert says in str(error.value)


@pytest.mark.parametrize("command", [["-m", "astronote", "migrate"], ["-m", "scheduler"],
                                     ["-m", "dramatiq", "actors"]])
def test_every_process_stops_with_one_line_and_no_traceback(command):
    env = {**os.environ, "SEND_BATCH_SIZE": "lots", "DATABASE_URL": "postgresql://x/y",
           "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "SEND_BATCH_SIZE='lots' is not an integer" in done.stderr
    assert "Traceback" not in done.stderr
