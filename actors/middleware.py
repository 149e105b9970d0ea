"""Dramatiq middleware: each message gets a pooled database connection for its duration."""
from __future__ import annotations

from dramatiq import Middleware

from models.database import db


class DatabaseConnection(Middleware):
    def before_process_message(self, broker, message) -> None:
        db.connect(reuse_if_open=True)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if not db.is_closed():
            db.close()

    after_skip_message = after_process_message
