"""Shared pieces of the dashboard's browser scripts: a headless Chromium driven by
Selenium through Debian's chromedriver, with the DevTools performance log on (every
request's URL and headers), and small wait helpers."""

import json
import os
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("HERALD_CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1280,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(os.environ.get("HERALD_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


def wait(driver, seconds=15):
    return WebDriverWait(driver, seconds)


def visible(driver, css, seconds=15):
    return wait(driver, seconds).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def requests(driver):
    """Every request the page made since the last call: (url, headers)."""
    out = []
    for entry in driver.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m["method"] == "Network.requestWillBeSent":
            r = m["params"]["request"]
            out.append((r["url"], r.get("headers", {})))
        elif m["method"] == "Page.frameNavigated":
            out.append((m["params"]["frame"]["url"], {}))
    return out


def severe_console(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def retry(what, fn, seconds=15):
    deadline = time.time() + seconds
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - keep polling until the deadline
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
