"""Headless Debian Chromium through selenium (never a downloaded browser), for browser tests and
the README screenshots. Needs ``apt-get install chromium chromium-driver`` and ``pip install selenium``."""

from __future__ import annotations

import shutil

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run")


def missing() -> str:
    """Why a browser cannot start here ("" when it can)."""
    import importlib.util

    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[host]')"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return ""


def headless_chromium(width: int = 1700, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
