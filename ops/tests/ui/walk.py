"""Walks the dashboard in headless Chromium against a running Herald and Knot:

1. a bad key shows a clear error and stays on the sign-in form;
2. signs in with the keyboard; adds `sender.test` in the domain wizard; reads the zone
   snippet the wizard shows; verifies before publishing (findings say "not found" with
   advice); publishes the snippet plus a second SPF record in Knot (the SPF finding says
   to merge); publishes the snippet alone; verifies until the domain is verified;
3. loads the stats page (totals and two SVG charts);
4. finds a message by recipient and opens its timeline;
5. checks accessibility basics (labels, landmarks, buttons), that the console has no
   errors (a CSP violation would be one), and that the key never appears in a URL.

Screenshots go to the artifacts directory. Exit status 0 when everything holds.

6. signs in with an operator key: the accounts (with their keys) and the log lag.

usage: walk.py BASE_URL API_KEY KNOT_CONF ZONE_FILE KNOT_PORT RECIPIENT SENT ARTIFACTS OPERATOR_KEY
"""

import os
import subprocess
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from common import browser, requests, retry, severe_console, visible

BASE, KEY, KNOT_CONF, ZONE_FILE, KNOT_PORT, RECIPIENT, SENT, ART, OPERATOR = sys.argv[1:10]
SENT = int(SENT)
os.makedirs(ART, exist_ok=True)
serial = [1]


def shot(driver, name):
    """A screenshot of the whole page (the window grown to the document's height)."""
    path = os.path.join(ART, f"{name}.png")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(1000, height + 140), 6000))
    driver.save_screenshot(path)
    driver.set_window_size(1280, 1000)
    print(f"screenshot {path}")


def publish(lines):
    """Rewrites sender.test in Knot with `lines` and waits until the new serial is served."""
    serial[0] += 1
    head = (f"$ORIGIN sender.test.\n$TTL 60\n@ SOA ns.sender.test. hostmaster.sender.test. {serial[0]} 60 60 600 60\n"
            "@ NS ns.sender.test.\nns A 127.0.0.1\n@ MX 10 mail\nmail A 127.0.0.1\n")
    with open(ZONE_FILE, "w") as f:
        f.write(head + "\n".join(lines) + "\n")
    subprocess.run(["knotc", "-c", KNOT_CONF, "zone-reload", "sender.test"], check=True, capture_output=True)
    retry("knot to serve the new serial", lambda: subprocess.run(
        ["kdig", "@127.0.0.1", "-p", KNOT_PORT, "+tcp", "+short", "sender.test.", "SOA"],
        capture_output=True, text=True).stdout.split()[2:3] == [str(serial[0])])


def findings(driver):
    return {(li.get_attribute("data-record"), li.get_attribute("data-result"))
            for li in driver.find_elements(By.CSS_SELECTOR, "#verify-results li.finding")}


def verify(driver, expect):
    """Clicks Verify and waits until the findings satisfy `expect`; returns them."""
    driver.find_element(By.ID, "verify").click()
    return retry("the verify findings", lambda: expect(findings(driver)) and findings(driver), 20)


def a11y(driver, page):
    problems = driver.execute_script("""
        const out = [];
        for (const el of document.querySelectorAll('input, select, textarea')) {
          if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) out.push('unlabelled ' + el.outerHTML.slice(0, 80));
        }
        for (const b of document.querySelectorAll('button')) {
          if (!b.getAttribute('type')) out.push('button without type: ' + b.textContent);
          if (!(b.textContent.trim() || b.getAttribute('aria-label'))) out.push('button without a name');
        }
        for (const a of document.querySelectorAll('a')) if (!a.getAttribute('href')) out.push('link without href: ' + a.textContent);
        for (const s of document.querySelectorAll('svg.chart')) if (s.getAttribute('role') !== 'img' || !s.querySelector('title')) out.push('chart without role/title');
        if (!document.querySelector('header') || !document.querySelector('main') || [...document.querySelectorAll('h1')].filter((e) => e.getClientRects().length).length !== 1) out.push('landmarks or one h1 missing');
        if (document.querySelector('[onclick], [style]')) out.push('inline handler or style');
        return out;
    """)
    assert not problems, f"{page}: {problems}"


def main():
    d = browser()
    try:
        # 1. A bad key: a clear error, no navigation.
        d.get(BASE + "/ui/")
        key = visible(d, "#key")
        assert d.switch_to.active_element == key, "the key field has the focus"
        key.send_keys("hrld_not_a_real_key" + Keys.ENTER)
        err = retry("the sign-in error", lambda: d.find_element(By.ID, "sign-in-error").text)
        assert "does not know this key" in err, err
        assert d.find_element(By.ID, "nav").get_attribute("hidden") is not None, "still signed out"
        shot(d, "01-bad-key")

        # 2. Sign in with the keyboard only.
        key.clear()
        key.send_keys(KEY + Keys.ENTER)
        visible(d, "#domain-name")
        a11y(d, "domains")
        # Focus order: the page's heading has the focus after navigation; Tab goes on to the
        # first field, Shift+Tab back through the header; the skip link comes first of all.
        retry("the h1 to have the focus (once the page has loaded)",
              lambda: d.switch_to.active_element.get_attribute("id") == "page-title")
        d.switch_to.active_element.send_keys(Keys.TAB)
        assert d.switch_to.active_element.get_attribute("id") == "domain-name", "Tab goes to the first field"
        order = []
        for _ in range(4):
            d.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
            order.append(d.switch_to.active_element.text)
        assert order == ["Sign out", "Webhooks", "Suppressions", "Messages"], order
        first = d.execute_script("return document.querySelector('a[href], button, input, select').textContent")
        assert first == "Skip to content", first
        shot(d, "02-domains")
        d.find_element(By.ID, "domain-name").send_keys("sender.test")
        d.find_element(By.ID, "domain-rua").send_keys("dmarc@sender.test" + Keys.ENTER)
        snippet = retry("the zone snippet", lambda: d.find_element(By.ID, "zone-snippet").get_attribute("textContent"))
        assert "_domainkey.sender.test." in snippet and "v=spf1" in snippet and "_dmarc.sender.test." in snippet, snippet
        copies = d.find_elements(By.CSS_SELECTOR, "button.copy")
        rows = d.find_elements(By.CSS_SELECTOR, "#step-records ~ table tbody tr")
        assert len(rows) >= 5 and len(copies) == 2 * len(rows) + 1, (len(rows), len(copies))
        a11y(d, "wizard")
        shot(d, "03-records")

        # Before publishing: findings say what is missing, with advice.
        found = verify(d, lambda f: ("spf", "missing") in f)
        assert ("dkim", "missing") in found, found
        advice = d.find_element(By.CSS_SELECTOR, 'li.finding[data-record="spf"] .advice').text
        assert "only one" in advice, advice
        shot(d, "04-verify-missing")

        # The snippet plus an SPF record of another service: the finding says to merge.
        lines = [l for l in snippet.splitlines() if l.strip() and not l.startswith(";")]
        publish(lines + ['sender.test. 60 IN TXT "v=spf1 include:_spf.other-esp.example ~all"'])
        verify(d, lambda f: ("spf", "conflict") in f)
        spf = d.find_element(By.CSS_SELECTOR, 'li.finding[data-record="spf"]').text
        assert "merge" in spf and "_spf.other-esp.example" in spf, spf
        merged = retry("the merged SPF record in step 2", lambda: [
            l for l in d.find_element(By.ID, "zone-snippet").get_attribute("textContent").splitlines()
            if "v=spf1" in l and "_spf.other-esp.example" in l and "_spf.herald.test" in l])
        assert len(merged) == 1, merged
        shot(d, "05-verify-spf-conflict")

        # The snippet alone: verified.
        publish(lines)
        verify(d, lambda f: f and all(r == "ok" for _, r in f))
        retry("the verified status", lambda: d.find_element(By.ID, "domain-status").text == "verified")
        shot(d, "06-verified")
        d.find_element(By.ID, "diagnose").click()
        retry("the diagnostics", lambda: d.find_elements(By.CSS_SELECTOR, "#diagnostics li.finding"))

        # 3. Stats: totals and two charts.
        d.find_element(By.LINK_TEXT, "Statistics").click()
        visible(d, "#stats-ready")
        charts = d.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) == 2, len(charts)
        accepted = d.find_element(By.CSS_SELECTOR, ".totals div:first-child dd").text.split()[0]
        assert int(accepted.replace(",", "")) >= SENT, accepted
        d.find_element(By.CSS_SELECTOR, "#stats-ready details summary").click()
        rows = retry("the numbers table", lambda: d.find_elements(By.CSS_SELECTOR, "#stats-ready details tbody tr"))
        assert len(rows) >= 30, len(rows)
        a11y(d, "stats")
        shot(d, "07-stats")
        # Bad input gets words, not a blank page: dates that do not parse, a range too long.
        d.get(BASE + "/ui/#/stats?from=yesterday&to=soon")
        retry("the bad-date message", lambda: "not valid" in d.find_element(By.CSS_SELECTOR, "#page .error").text)
        visible(d, "#stats-ready")
        d.get(BASE + "/ui/#/stats?from=2020-01-01&to=2026-01-01&interval=hour")
        too_long = retry("the range error", lambda: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#page .error") if "at most" in e.text])
        assert "2200" in too_long[0].replace(",", ""), too_long

        # 4. A message by recipient, then its timeline.
        d.find_element(By.LINK_TEXT, "Messages").click()
        visible(d, "#message-search").send_keys(RECIPIENT + Keys.ENTER)
        links = retry("the search results", lambda: d.find_elements(By.CSS_SELECTOR, "main table a"))
        assert len(links) >= SENT, len(links)
        links[0].click()
        items = retry("the timeline", lambda: d.find_elements(By.CSS_SELECTOR, ".timeline li"))
        text = " ".join(i.text for i in items)
        assert "Accepted" in text and "Delivery attempt" in text and "delivered" in text, text
        a11y(d, "message")
        shot(d, "08-message")

        # 5. Suppressions and webhooks pages load.
        for page in ("Suppressions", "Webhooks"):
            d.find_element(By.LINK_TEXT, page).click()
            retry(page, lambda: d.find_element(By.ID, "page-title").text == page)
            a11y(d, page)

        # The key was sent only in the Authorization header, never in a URL or elsewhere.
        seen = requests(d)
        assert any(h.get("Authorization") == f"Bearer {KEY}" for _, h in seen), "the API was called with the key"
        leaks = [u for u, _ in seen if KEY in u]
        assert not leaks, f"the key is in a URL: {leaks}"
        assert KEY not in d.current_url
        assert not d.execute_script("return document.cookie"), "no cookies"
        assert d.execute_script("return localStorage.length") == 0, "nothing in localStorage"
        errors = severe_console(d)
        # Only the refusals this walk provoked (the bad key's 401, the long range's 400).
        provoked = ("status of 401", "status of 400")
        assert not [e for e in errors if not (e["source"] == "network" and any(p in e["message"] for p in provoked))], errors

        # Signing out forgets the key.
        d.find_element(By.ID, "sign-out").click()
        visible(d, "#key")
        assert d.execute_script("return sessionStorage.length") == 0

        # 6. An operator key opens the operator pages, not the customer's.
        visible(d, "#key").send_keys(OPERATOR + Keys.ENTER)
        retry("the accounts table", lambda: d.find_elements(By.XPATH, "//main//table//code[text()='acme']"))
        nav = d.find_element(By.ID, "nav").text
        assert "Accounts" in nav and "Statistics" not in nav, nav
        a11y(d, "accounts")
        shot(d, "09-operator-accounts")
        d.find_element(By.LINK_TEXT, "Log lag").click()
        retry("the log lag table", lambda: d.find_elements(By.XPATH, "//main//caption[contains(., 'Consumer lag')]"))
        shot(d, "10-operator-log")
        leaks = [u for u, _ in requests(d) if OPERATOR in u]
        assert not leaks, f"the operator key is in a URL: {leaks}"
        print("walk: ok")
    except Exception:
        shot(d, "failure")
        print(d.page_source[:4000])
        raise
    finally:
        d.quit()


if __name__ == "__main__":
    main()
