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


def test_a_local_stack_generates_only_the_secrets_its_environment_leaves_unset(
    tmp_path, monkeypatch
):
    from astronote import stack

    monkeypatch.setattr(stack, "DEV_DEFAULTS", secrets_store.dev_secrets(tmp_path))
    given = {"SECRET_KEY": "s" * 40, "ADMIN_TOKEN": "a" * 30, "DLR_WEBHOOK_SECRET": "d" * 30}
    # When every secret is set, none is generated and the set values are used
    env = stack.child_environment(given, "postgresql://x/y", "redis://x", 1, 2)
    assert {k: env[k] for k in given} == given
    assert list(tmp_path.iterdir()) == []
    # When one is unset, only it is generated
    env = stack.child_environment(
        {**given, "ADMIN_TOKEN": ""}, "postgresql://x/y", "redis://x", 1, 2
    )
    assert [path.name for path in tmp_path.iterdir()] == ["admin_token"]
    assert env["ADMIN_TOKEN"] == (tmp_path / "admin_token").read_text().strip()
