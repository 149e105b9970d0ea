"""What is kept only for a while: the reconcile drops it, in bounded chunks, and nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from models.database import fetchall
from service import audit, idempotency, reconcile, retention, shops
from service.infra import config
from service.infra.config import ConfigError
from tests.conftest import process_environment


def report_ids() -> list[int]:
    return [row[0] for row in fetchall("SELECT id FROM delivery_report ORDER BY id")]


def add_reports(db, count: int, age: str, examined: bool = True) -> list[int]:
    rows = db.execute_sql(
        "INSERT INTO delivery_report (provider_id, status, received_at, examined_at)"
        " SELECT 'm-' || g, 'Delivered', now() - %s::interval,"
        "        CASE WHEN %s THEN now() END"
        " FROM generate_series(1, %s) g RETURNING id",
        (age, examined, count),
    ).fetchall()
    return [row[0] for row in rows]


def test_the_reconcile_drops_examined_reports_past_their_retention_and_keeps_the_rest(db, settings):
    # Given reports received 40 days ago (examined), 10 days ago, and now
    old = add_reports(db, 3, "40 days")
    recent = add_reports(db, 2, "10 days")
    new = add_reports(db, 2, "0 seconds")

    # When the reconcile runs with the default retention (30 days)
    report = reconcile.reconcile(settings, audit.ADMIN)

    # Then only the old ones are gone
    assert settings.delivery_report_retention_days == 30
    assert report.purged == {"idempotency_keys": 0, "delivery_reports": len(old)}
    assert report_ids() == recent + new


def test_an_old_report_the_applier_has_not_examined_is_kept_and_so_is_every_later_one(db, settings):
    # Given an old report nobody examined yet (the applier down), and old examined ones after
    examined_first = add_reports(db, 2, "40 days")
    unexamined = add_reports(db, 1, "40 days", examined=False)
    later = add_reports(db, 2, "40 days")

    # When the retention runs
    dropped = retention.purge(settings)

    # Then it stops at the unexamined one: it is still to be applied
    assert dropped["delivery_reports"] == len(examined_first)
    assert report_ids() == unexamined + later


def test_a_backlog_is_dropped_over_several_runs_in_chunks(db, settings, monkeypatch):
    # Given more old reports than one run drops (chunks of 3, at most 2 chunks a run)
    monkeypatch.setattr(retention, "CHUNK", 3)
    monkeypatch.setattr(retention, "MAX_CHUNKS", 2)
    add_reports(db, 8, "40 days")
    young = add_reports(db, 1, "1 day")

    # Then each run drops at most 6, and the next the rest
    assert retention.purge(settings)["delivery_reports"] == 6
    assert retention.purge(settings)["delivery_reports"] == 2
    assert retention.purge(settings)["delivery_reports"] == 0
    assert report_ids() == young


def test_retention_zero_keeps_reports_for_ever(db, settings):
    add_reports(db, 2, "400 days")
    kept = dataclasses.replace(settings, delivery_report_retention_days=0)
    assert retention.purge(kept)["delivery_reports"] == 0
    assert len(report_ids()) == 2


def test_expired_idempotency_keys_and_their_stored_answers_are_dropped(db, settings):
    # Given a key used 25 hours ago (its answer stored) and one used now
    shop, _ = shops.create_shop("keys.example", "Keys")
    fp = idempotency.fingerprint("POST", "/contacts", b"{}")
    for key in ("old", "new"):
        assert idempotency.begin(shop.id, key, fp) is None
        idempotency.finish(shop.id, key, idempotency.StoredAnswer(200, b'{"phone":"+1"}', None))
    db.execute_sql(
        "UPDATE idempotency_key SET created_at = now() - interval '25 hours' WHERE key = 'old'"
    )

    # When the reconcile runs
    report = reconcile.reconcile(settings, audit.ADMIN)

    # Then the expired key is gone, the live one replays as before
    assert report.purged["idempotency_keys"] == 1
    assert [row[0] for row in fetchall("SELECT key FROM idempotency_key")] == ["new"]
    assert idempotency.begin(shop.id, "new", fp) is not None


def test_a_retention_shorter_than_the_evidence_window_is_refused_at_start(service_urls):
    env = process_environment(service_urls)
    with pytest.raises(ConfigError, match="DELIVERY_REPORT_RETENTION_DAYS=3"):
        config.load({**env, "DELIVERY_REPORT_RETENTION_DAYS": "3"})
    assert config.load({**env, "DELIVERY_REPORT_RETENTION_DAYS": "0"})
    loaded = config.load(
        {**env, "DELIVERY_REPORT_RETENTION_DAYS": "3", "EVIDENCE_WINDOW_MS": str(86_400_000)}
    )
    assert loaded.delivery_report_retention_days == 3
