"""The development secrets of `astronote up`/`demo`: generated once under var/, private, reused."""

from __future__ import annotations

import stat

from astronote import secrets_store
from service.infra import config


def test_each_secret_is_generated_once_private_and_long_enough(tmp_path):
    # Given an empty var/
    # When a local stack asks for its secrets twice (two starts)
    first = dict(secrets_store.dev_secrets(tmp_path))
    second = dict(secrets_store.dev_secrets(tmp_path))
    # Then every secret is kept in its own file, readable by its owner only, and reused
    assert first == second
    assert set(first) == {"SECRET_KEY", "ADMIN_TOKEN", "DLR_WEBHOOK_SECRET"}
    assert len(set(first.values())) == 3
    for name, file in secrets_store.FILES.items():
        path = tmp_path / file
        assert path.read_text().strip() == first[name]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # And the configuration accepts them (each longer than its minimum)
    settings = config.load(first)
    assert (settings.secret_key, settings.admin_token) == (
        first["SECRET_KEY"],
        first["ADMIN_TOKEN"],
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        secrets_store.FILES.values()
    )  # no draft left behind
