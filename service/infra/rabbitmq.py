"""Dramatiq on RabbitMQ (`BROKER_URL=amqp://...`): the broker, whether it answers, and the
messages its queues hold.

Dramatiq's `RabbitmqBroker` keeps one pika `BlockingConnection` (and channel) per thread
(`threading.local`): every gunicorn thread, Dramatiq worker thread and APScheduler thread that
publishes opens its own, lazily, so no connection is shared between threads (pika's blocking
connection is not thread-safe) nor across a fork (nothing connects before gunicorn or the
Dramatiq CLI forks). A connection that went stale while its thread was idle (RabbitMQ drops
it when no heartbeat comes: an idle blocking connection sends none) fails the next publish,
which Dramatiq retries on a new connection. Publisher confirms make a publish that returned
one RabbitMQ holds: without them a message written into a connection the server had already
closed would be lost silently.

Each queue `q` is three RabbitMQ queues: `q` (waiting), `q.DQ` (delayed: retries with backoff,
`delay=`) and `q.XQ` (dead letters: failed). RabbitMQ counts a queue's ready messages in
`queue.declare`'s answer; the messages a consumer holds unacknowledged (prefetched, running,
or delayed until their eta inside a worker) are not in that count and AMQP offers no other,
so `active` is unknown (`None`) on RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
from dramatiq.brokers import rabbitmq as dramatiq_rabbitmq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from service.errors import BrokerUnavailable

# pika's defaults, unless the URL sets them: a RabbitMQ that does not answer within 5 s
# fails the connect, and one that blocks publishers (a memory or disk alarm) fails a publish
# after 10 s instead of holding a web thread forever (the reconciler republishes).
CONNECTION_DEFAULTS = {"socket_timeout": "5", "blocked_connection_timeout": "10"}


def connection_url(url: str) -> str:
    """`url` with `CONNECTION_DEFAULTS` added where its query string does not set them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query = {**CONNECTION_DEFAULTS, **query}
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_broker(url: str, dead_message_ttl_ms: int) -> RabbitmqBroker:
    """The RabbitMQ broker of `BROKER_URL`, with publisher confirms."""
    # Dramatiq reads the dead-letter queues' TTL from this module global when it declares
    # them; RabbitMQ fixes it at the first declaration (changing it later means deleting the
    # `.XQ` queues, or every declaration fails with PRECONDITION_FAILED).
    dramatiq_rabbitmq.DEAD_MESSAGE_TTL = dead_message_ttl_ms
    return RabbitmqBroker(url=connection_url(url), confirm_delivery=True)


def ping(broker: RabbitmqBroker) -> None:
    """Raise BrokerUnavailable unless RabbitMQ answers. This thread's connection may have gone
    stale while idle: then a new one is tried once, as Dramatiq's own publish does."""
    for attempt in (1, 2):
        try:
            broker.connection.process_data_events(time_limit=0)
            return
        except pika.exceptions.AMQPError as error:
            del broker.connection
            if attempt == 2:
                raise BrokerUnavailable(
                    f"RabbitMQ is unreachable ({type(error).__name__})"
                ) from error


def reachable(broker: RabbitmqBroker) -> bool:
    try:
        ping(broker)
    except BrokerUnavailable:
        return False
    return True


class RabbitmqQueueCounter:
    """`{waiting, active: None, delayed, failed, consumers}` for each queue, read with passive
    `queue.declare`s (which create nothing: a queue not declared yet holds nothing)."""

    def __init__(self, broker: RabbitmqBroker) -> None:
        self.broker = broker

    def counts(self, queues: Sequence[str]) -> dict[str, dict[str, int | None]]:
        """Three round trips per queue on this thread's channel; BrokerUnavailable if down."""
        ping(self.broker)  # a stale connection is replaced here, not mid-count
        try:
            return {queue: self._queue(queue) for queue in queues}
        except pika.exceptions.AMQPConnectionError as error:
            del self.broker.connection
            raise BrokerUnavailable(f"RabbitMQ is unreachable ({type(error).__name__})") from error

    def ping(self) -> None:
        ping(self.broker)

    def _queue(self, queue: str) -> dict[str, int | None]:
        waiting, consumers = self._declared(queue)
        delayed, _ = self._declared(dq_name(queue))
        failed, _ = self._declared(xq_name(queue))
        return {
            "waiting": waiting,
            "active": None,
            "delayed": delayed,
            "failed": failed,
            "consumers": consumers,
        }

    def _declared(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of queue `name`; (0, 0) if it does not exist."""
        try:
            frame = self.broker.channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            # RabbitMQ closes the channel on a passive declare of a missing queue (404).
            del self.broker.channel
            if error.reply_code == 404:
                return 0, 0
            raise
        return frame.method.message_count, frame.method.consumer_count
