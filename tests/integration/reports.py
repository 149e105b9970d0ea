"""Reports as the provider sends them: stored by the webhook's service, then applied by the
applier (as the `applyDeliveryReports` actor does after the webhook's signal)."""

from __future__ import annotations

from typing import Any

from service import report_inbox
from service.infra.config import Settings


def receive(reports: list[dict[str, Any]], settings: Settings) -> int:
    """Store the reports, run the applier; returns how many reports it applied."""
    report_inbox.store_reports(reports)
    return report_inbox.apply_stored_reports(settings).applied
