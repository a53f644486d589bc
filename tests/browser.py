"""A real headless chromium for the tests that check what MLflow's UI shows a user
(``tools/install_browser.sh``, run by ``make test``, installs Debian's chromium and
chromium-driver)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

#: Where the UI tests leave their screenshots (and, on failure, the page's text).
SCREENSHOTS = Path(__file__).resolve().parents[1] / 'test-artifacts' / 'ui'


def browser(tmp_path):
    """A headless chromium driven by selenium (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    assert chromium and driver, ("Debian's chromium and chromium-driver are needed for the UI "
                                 'test (tools/install_browser.sh installs them)')
    options = Options()
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic',
                '--no-first-run', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--window-size=1900,1200',
                f'--user-data-dir={tmp_path / "chromium-profile"}',
                '--autoplay-policy=no-user-gesture-required'):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


def wait(predicate, timeout=60):
    """The first truthy value of ``predicate()`` within ``timeout`` seconds (exceptions count as
    "not yet": the page is still rendering)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: BLE001 - the page is still rendering
            pass
        time.sleep(0.5)
    raise AssertionError('the page did not show what was expected')
