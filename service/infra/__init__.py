"""Infrastructure: configuration, process start-up, logs, metrics, the broker and its queues,
the shared rate limiter. No domain rules live here."""
