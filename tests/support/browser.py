"""Driving the web page in Debian's headless Chromium (selenium, chromedriver): starting the browser, finding
the page's hooks, waiting, reading its console, screenshots. The `browser` and `marker_server` fixtures
(tests/conftest.py) are built on this; the page's tests are tests/test_web_page*.py.

Nothing here downloads a browser: the chromedriver and Chromium paths are given
explicitly, so Selenium Manager never runs. A machine without them FAILS the
browser tests (it does not skip them): `make setup` installs both (tools/install_system_packages.sh).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
)
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
WAIT = 30  # seconds any one thing on the page may take


@contextlib.contextmanager
def chromium():
    """A headless Chromium (a fresh temporary profile, flags as in CHROMIUM_FLAGS), quit at the end."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"The browser tests need Debian's Chromium and chromedriver, missing: {', '.join(missing)}. "
                    "Install them with `make setup` (tools/install_system_packages.sh installs the "
                    "'chromium' and 'chromium-driver' packages).", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("The browser tests need selenium: `.venv/bin/pip install -r requirements.txt`.", pytrace=False)

    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager never runs anyway (paths are explicit)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for console_errors()
    service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(profile, "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def by_testid(driver, testid):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def by_id(driver, element_id):
    return driver.find_element("id", element_id)


def all_by_testid(driver, testid):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def wait_until(driver, condition, message, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message)


def console_errors(driver):
    """What the page logged as errors since the last call (reading the log empties it).

    The browser's own request for /favicon.ico, which the service does not
    serve, is not the page's error.
    """
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "/favicon.ico " not in entry["message"]]


def open_page(driver, base_url):
    console_errors(driver)  # forget what earlier pages logged
    driver.get(base_url + "/")
    wait_until(driver, lambda d: d.execute_script("return document.readyState") == "complete", "page never loaded")
    # The settings' defaults and limits arrive from the OpenAPI document after the page loads.
    try:
        wait_until(driver, lambda d: by_id(d, "analysis-form").get_attribute("data-parameters") != "loading",
                   "the page never finished reading the settings from the server", timeout=10)
    except Exception:
        pytest.fail(f"the page's modules never read the settings; its console: {console_errors(driver)}", pytrace=False)
    assert not driver.execute_script("return document.getElementById('results').offsetParent !== null")


def set_field(driver, name, value):
    field = driver.find_element("name", name)
    field.clear()
    field.send_keys(str(value))


def choose(driver, path, analysis_type, **params):
    from selenium.webdriver.support.ui import Select

    by_testid(driver, "file-input").send_keys(path)
    Select(by_testid(driver, "analysis-type")).select_by_value(analysis_type)
    for name, value in params.items():
        set_field(driver, name, value)


def session_id(driver):
    sid = wait_until(driver, lambda d: d.find_element("id", "main").get_attribute("data-session-id"),
                     "the page never showed the session id of its upload")
    return sid


def wait_for_results(driver):
    wait_until(driver, lambda d: by_testid(d, "progress").get_attribute("value") == "100",
               "the analysis progress bar never reached 100")
    wait_until(driver, lambda d: by_testid(d, "results").is_displayed(), "the results never appeared")


def player_time(driver):
    return driver.execute_script("return document.querySelector('[data-testid=player]').currentTime")


def wait_for_player(driver, duration):
    wait_until(driver, lambda d: d.execute_script(
        "var v = document.querySelector('[data-testid=player]'); return v.readyState >= 1 && v.duration > 0"),
        "the player never loaded the local video")
    assert driver.execute_script("return document.querySelector('[data-testid=player]').duration") == \
        pytest.approx(duration, abs=0.3)
    src = driver.execute_script("return document.querySelector('[data-testid=player]').currentSrc")
    assert src.startswith("blob:"), src  # played from the chosen file, not downloaded again


def assert_seeks_to(driver, element, start, activate="click"):
    from selenium.webdriver.common.keys import Keys

    if activate == "click":
        element.click()
    else:
        element.send_keys(Keys.ENTER)
    wait_until(driver, lambda d: abs(player_time(d) - start) <= 0.3,
               f"the player did not seek to {start} s (it is at {player_time(driver)} s)", timeout=5)


def assert_fits_a_phone(browser, what):
    """Nothing scrolls sideways at a phone's 375 px; the window gets its size back."""
    browser.set_window_size(375, 800)
    try:
        assert no_horizontal_overflow(browser), f"{what} is wider than a phone screen"
    finally:
        browser.set_window_size(1280, 900)


def no_horizontal_overflow(driver):
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def screenshot(driver, name, width=1280):
    """A full-page screenshot into test-output/ (gitignored)."""
    OUTPUT.mkdir(exist_ok=True)
    driver.set_window_size(width, 900)
    height = driver.execute_script("return Math.max(document.documentElement.scrollHeight, 900)")
    driver.set_window_size(width, min(height + 140, 4000))
    try:
        # A frame on screen, not the player's loading spinner.
        wait_until(driver, lambda d: d.execute_script(
            "var v = document.querySelector('[data-testid=player]'); return !v.seeking && v.readyState >= 2"),
            "the player never showed a frame", timeout=10)
        driver.save_screenshot(str(OUTPUT / name))
    finally:
        driver.set_window_size(1280, 900)


def api(base_url, path, method="get"):
    response = getattr(requests, method)(f"{base_url}/api/v1/video/{path}", timeout=10)
    return response.status_code, response.json()
