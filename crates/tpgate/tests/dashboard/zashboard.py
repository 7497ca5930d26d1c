#!/usr/bin/env python3
"""Drives a real zashboard, served by tpgate at /ui/, in headless Chromium (selenium with
Debian's chromium and chromedriver): the dashboard connects to tpgate's API with the
secret given in the URL (as zashboard's ?hostname=&port=&secret= setup link does), and each
page must show what tpgate reports. Saves one screenshot per page.

Usage: zashboard.py BASE_URL SECRET OUT_DIR EXPECT_GROUP EXPECT_CONNECTION_TEXT
Exit 0 when every page showed what it should; prints one line per page.
"""

import os
import sys
import time
from urllib.parse import quote, urlparse

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TIMEOUT = 30


def wait_text(driver, needles, page):
    """Waits until the page's text holds every string of `needles`."""
    deadline = time.time() + TIMEOUT
    text = ""
    while time.time() < deadline:
        try:
            text = driver.find_element(By.TAG_NAME, "body").text
        except Exception:  # the page is being rebuilt
            text = ""
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    raise SystemExit(f"{page}: {needles} not shown within {TIMEOUT}s; page text:\n{text}")


def main():
    base, secret, out, group, conn = sys.argv[1:6]
    os.makedirs(out, exist_ok=True)
    u = urlparse(base)
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--lang=en-US",
        # Nothing but the dashboard: no update checks or other background requests.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-sync",
        "--no-first-run",
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        setup = (
            f"{base}/ui/?hostname={u.hostname}&port={u.port}"
            f"&secret={quote(secret, safe='')}#/proxies"
        )
        driver.get(setup)
        pages = [
            ("proxies", [group, "GLOBAL"]),
            ("connections", [conn]),
            ("rules", ["Match"]),
            ("logs", []),
        ]
        # Not the overview page: it tests latency to public sites from the browser.
        for page, needles in pages:
            if page != "proxies":
                driver.get(f"{base}/ui/#/{page}")
            text = wait_text(driver, needles, page)
            time.sleep(2)
            shot = os.path.join(out, f"zashboard-{page}.png")
            driver.save_screenshot(shot)
            if "Unauthorized" in text or "401" in text:
                raise SystemExit(f"{page}: the dashboard shows an authorization error:\n{text}")
            print(f"{page}: ok ({shot})")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
