"""The clock's jobs: every way a campaign can get stuck, repaired on a schedule.

Each job only publishes actor messages or calls services whose effects are conditional
updates, so it stays harmless if two leaders overlap; the (job, slot) claim in `runs` makes
such an overlap run each slot once anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from service import reconcile, report_inbox, scheduling
from service.audit import Actor
from service.infra import dispatch
from service.infra.config import Settings


@dataclass(frozen=True)
class Job:
    name: str
    interval_ms: int
    # Called with the settings and the actor its changes are recorded for (the job, the epoch).
    run: Callable[[Settings, Actor], dict[str, Any]]


def launch_scheduled(settings: Settings, actor: Actor) -> dict[str, Any]:
    """Scheduled campaigns whose time has come go to `sending` (or `failed`, with why)."""
    return scheduling.launch_due_campaigns(settings, actor).as_dict()


def refresh_statuses(settings: Settings, actor: Actor) -> dict[str, Any]:
    """`updateCampaignStatus` for sending campaigns and finished ones with waiting reports;
    `applyDeliveryReports` while stored reports wait for the applier (the fallback for a
    webhook whose signal was lost: Redis or the broker down, a web process killed)."""
    applier = report_inbox.has_unexamined()
    if applier:
        dispatch.publish_apply_reports()
    return {"published": len(scheduling.refresh_statuses()), "applier": applier}


def reconcile_campaigns(settings: Settings, actor: Actor) -> dict[str, Any]:
    """Republish lost batches, resolve old claims, finalise idle campaigns, release credits."""
    report = asdict(reconcile.reconcile(settings, actor))
    report["finalized"] = {str(k): v for k, v in report["finalized"].items()}
    return report


# name -> (the Settings field holding its interval, what it runs)
SCHEDULE: dict[str, tuple[str, Callable[[Settings, Actor], dict[str, Any]]]] = {
    "launch_scheduled": ("schedule_interval_ms", launch_scheduled),
    "refresh_statuses": ("status_refresh_interval_ms", refresh_statuses),
    "reconcile": ("reconcile_interval_ms", reconcile_campaigns),
}


def all_jobs(settings: Settings) -> list[Job]:
    return [
        Job(name, getattr(settings, interval), run) for name, (interval, run) in SCHEDULE.items()
    ]
