"""The worker's entry point: `dramatiq actors --queues sms-send sms-priority ...`.

Importing this package boots the process (settings, JSON logs, database, broker) and
declares every actor. Actors are adapters: they take ids, and the work is in `service`.
"""

from __future__ import annotations

from actors.middleware import DatabaseConnection, QueuePolling, RequeuePrefetched, WorkerStopping
from service.infra import metrics, runtime

settings = runtime.boot("worker")
# Without the provider's key every call is refused (401) and every campaign sent fails.
runtime.require(settings, "MITTO_API_KEY")
metrics.configure(settings)  # before any actor module creates a metric

import dramatiq  # noqa: E402

from actors.presence import WorkerPresence  # noqa: E402

dramatiq.get_broker().add_middleware(QueuePolling())
dramatiq.get_broker().add_middleware(DatabaseConnection())
dramatiq.get_broker().add_middleware(RequeuePrefetched())
stopping = WorkerStopping()
dramatiq.get_broker().add_middleware(stopping)
dramatiq.get_broker().add_middleware(WorkerPresence(settings.redis_url))

from actors import sms, status  # noqa: E402,F401
