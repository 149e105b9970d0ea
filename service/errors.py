"""Domain errors raised by services; `api/errors.py` maps each to one HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller can act on. `title` is short, `description` says why."""

    title = "Error"

    def __init__(self, description: str, field: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.field = field


class NotFound(DomainError):
    """The object does not exist, or belongs to another shop (indistinguishable on purpose)."""

    title = "Not found"


class InvalidInput(DomainError):
    """A field of the request is invalid; `field` names it."""

    title = "Invalid input"


class InvalidTransition(DomainError):
    """The object is not in a state that allows this action (for example enqueue twice)."""

    title = "Invalid state transition"


class InsufficientCredits(DomainError):
    """The shop's available credits do not cover the reservation; nothing was changed."""

    title = "Insufficient credits"


class NoRecipients(DomainError):
    """The campaign's audience has no eligible (subscribed, unsuppressed) contact."""

    title = "No eligible recipients"


class Unauthorized(DomainError):
    title = "Unauthorized"


class DependencyUnavailable(DomainError):
    """PostgreSQL, Redis or the provider cannot be reached right now."""

    title = "Service unavailable"


class BrokerUnavailable(DependencyUnavailable):
    """RabbitMQ (BROKER_URL) cannot be reached: a message could not be published."""
