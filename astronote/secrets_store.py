"""Development secrets for `astronote up` and `astronote demo`, used only when the variable
is unset: each generated once under `var/` (mode 0600) and reused on the next start, so a
local stack never runs on a value written in the code, and its links and sessions keep
working across restarts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

# Each variable and the file under var/ that keeps its development value.
FILES = {
    "SECRET_KEY": "secret_key",
    "ADMIN_TOKEN": "admin_token",
    "DLR_WEBHOOK_SECRET": "dlr_webhook_secret",
}


def stored_secret(path: Path) -> str:
    """The secret kept at `path`, generated first if there is none yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        try:
            # A link appears whole or not at all, and never replaces the secret of a start
            # that won the race: both then read the same value.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


class DevSecrets(Mapping[str, str]):
    """SECRET_KEY, ADMIN_TOKEN and DLR_WEBHOOK_SECRET for a local stack, each read from (or
    generated into) its file under `var_dir` when first asked for, not at import."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir

    def __getitem__(self, name: str) -> str:
        return stored_secret(self.var_dir / FILES[name])

    def __iter__(self) -> Iterator[str]:
        return iter(FILES)

    def __len__(self) -> int:
        return len(FILES)


def dev_secrets(var_dir: Path) -> DevSecrets:
    """The development secrets kept under `var_dir`."""
    return DevSecrets(var_dir)
