"""Observability: health, the operator board, and the presence of workers and clocks in Redis.
Read-only views of the system; the clock's read side lives here so health needs no `scheduler`."""
