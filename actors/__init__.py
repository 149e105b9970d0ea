"""The worker's entry point: `dramatiq actors --queues sms-send delivery-status-update`.

Importing this package boots the process (settings, JSON logs, database, Redis broker) and
declares every actor. Actors are adapters: they take ids, and the work is in `service`.
"""
from __future__ import annotations

from actors.middleware import DatabaseConnection
from service import runtime

settings = runtime.boot("worker")

import dramatiq  # noqa: E402

dramatiq.get_broker().add_middleware(DatabaseConnection())

from actors import sms, status  # noqa: E402,F401
