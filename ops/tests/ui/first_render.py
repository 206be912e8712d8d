"""Loads the dashboard's stats page RUNS times in headless Chromium and prints, per load,
a JSON line: first contentful paint and the `herald:stats-rendered` mark (charts drawn),
in milliseconds from navigation start (Navigation Timing / Paint Timing).

usage: first_render.py BASE_URL API_KEY RUNS [ROUTE]   (ROUTE default `stats`, e.g.
`stats?interval=hour`)"""

import json
import sys

from common import browser, visible

BASE, KEY, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
ROUTE = sys.argv[4] if len(sys.argv) > 4 else "stats"

d = browser()
try:
    d.get(BASE + "/ui/")
    visible(d, "#key")
    # Signed in as the sign-in form would leave it (the key in this tab's session storage).
    d.execute_script(
        "sessionStorage.setItem('herald.key', arguments[0]);"
        "sessionStorage.setItem('herald.role', 'customer'); sessionStorage.setItem('herald.name', 'bench');",
        KEY,
    )
    for run in range(RUNS + 1):
        # A new document each time (the query string differs), in the same tab and origin,
        # as when a signed-in user opens the page again.
        d.get(f"{BASE}/ui/?load={run}#/{ROUTE}")
        visible(d, "#stats-ready", 30)
        t = d.execute_script("""
            const paint = performance.getEntriesByName('first-contentful-paint')[0];
            const mark = performance.getEntriesByName('herald:stats-rendered')[0];
            const nav = performance.getEntriesByType('navigation')[0];
            const api = performance.getEntriesByType('resource').find((r) => r.name.includes('/v1/stats/series'));
            return {fcp: paint && paint.startTime, rendered: mark && mark.startTime,
                    ttfb: nav.responseStart, api: api && api.duration};
        """)
        if run == 0:
            continue  # the first load warms the browser's cache of the page's files
        print(json.dumps(t), flush=True)
finally:
    d.quit()
