"""Headless Chromium for end-to-end tests of pages (Debian's `chromium` and `chromium-driver`).

`ensure_chromium()` installs the two packages with apt-get when they are missing (the CI and
developer machines run as root); where that is impossible the page tests are skipped with the
reason, never silently passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ("chromium", "chromium-driver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


def _installed() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def ensure_chromium() -> None:
    """Install Chromium and its driver if absent; skip the calling test if that cannot be."""
    if _installed():
        return
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        pytest.skip(
            f"{CHROMIUM} and {CHROMEDRIVER} are missing and apt-get cannot install "
            f"them here (needs root and apt-get): apt-get install {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 and command[1] == "install":
            pytest.skip(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-500:]}")
    if not _installed():
        pytest.skip(f"apt-get ran but {CHROMIUM} or {CHROMEDRIVER} is still missing")


def start_browser(profile_dir: Path):
    """A headless Chromium driven by Selenium, with a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras")
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
