"""A real browser for the page tests: Debian's headless Chromium driven by Selenium.

`chromium_paths()` finds `chromium` and `chromedriver`, installing Debian's `chromium` and `chromium-driver` with
apt-get when either is missing (as root; once per machine, under a lock shared by xdist workers), and skips the
calling test naming why when they cannot be had. `headless_chromium()` starts one with flags that work on a
machine without a display, a GPU or the internet, in a fresh profile.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PACKAGES = ("chromium", "chromium-driver")
PACKAGE_LIST = " ".join(PACKAGES)
INSTALL_LOCK = os.path.join(tempfile.gettempdir(), "keras_deeplab_chromium_install.lock")
INSTALL_TIMEOUT_S = 900
FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, in a container: Chromium's sandbox needs user namespaces it may not have
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # a container's /dev/shm is small
)


def _found() -> tuple[str, str] | None:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
    )
    return (browser, driver) if browser and driver else None


def _apt_get(*arguments: str) -> subprocess.CompletedProcess:
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *arguments]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=INSTALL_TIMEOUT_S)


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver): found, or installed from Debian's packages; pytest.skip with the reason otherwise
    (selenium, which drives them, missing included)."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    found = _found()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"headless Chromium is not installed and cannot be here (needs root and apt-get): {PACKAGE_LIST}")
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _found()  # another worker may have installed it meanwhile
        if found:
            return found
        try:
            install = _apt_get("install", "-y", "--no-install-recommends", *PACKAGES)
            if install.returncode != 0:  # stale or absent package lists: update them once, then try again
                _apt_get("update")
                install = _apt_get("install", "-y", "--no-install-recommends", *PACKAGES)
        except (OSError, subprocess.TimeoutExpired) as error:
            pytest.skip(f"apt-get install {PACKAGE_LIST} did not finish: {error}")
    found = _found()
    if not found:
        last = (install.stderr or install.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"apt-get install {PACKAGE_LIST} failed (exit {install.returncode}): {last[0]}")
    return found


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A Selenium WebDriver of headless Chromium in a fresh profile, quit on exit."""
    browser, driver = chromium_paths()
    from selenium import webdriver

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
        try:
            yield session
        finally:
            session.quit()
