"""E2E fixtures: a stack of real processes per test, on the broker the test asks for
(`broker_url`, tests/conftest.py): the marked tests run on Redis and on RabbitMQ, the CI's
bounded RabbitMQ pass (the pipeline, a worker killed mid-send, pause and resume, a retry after
Retry-After, health's queue counts, the clock's republish of lost batches)."""

from __future__ import annotations

import pytest

from tests.conftest import process_environment
from tests.e2e.stack import Stack


@pytest.fixture
def make_stack(request, db, service_urls, broker_url):
    """Build a Stack with extra environment; every process is stopped after the test."""
    stacks: list[Stack] = []

    def build(**overrides: str) -> Stack:
        env = process_environment(service_urls, BROKER_URL=broker_url, **overrides)
        stack = Stack(env, f"{request.node.name}.{len(stacks)}")
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(make_stack):
    """Simulator, gunicorn (2 workers) and one Dramatiq worker, with default settings."""
    running = make_stack()
    running.start_sim("--dlr-delay-ms", "50")
    running.start_web()
    running.start_worker()
    return running
