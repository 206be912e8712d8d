#!/usr/bin/env python3
"""Builds every test binary of the workspace once, then runs them in parallel.

Usage: run-tests.py LOG_DIR [--jobs N]

Each binary runs with its package directory as the working directory (as `cargo test`
does), its output in LOG_DIR/<package>-<target>.log. Binaries are started longest first
(by the wall times an earlier run recorded in TEST_HISTORY, if any, else by a built-in
guess), so the slow end-to-end suites overlap with the many short ones. Doc
tests run last, through cargo. Prints one line per binary as it ends, then the totals:
`N passed, N failed`. Exits non-zero if any binary failed.

Environment: TEST_JOBS (default 3), TEST_THREADS (passed as --test-threads, default 2),
TEST_HISTORY (a JSON file of wall times, read and rewritten; default LOG_DIR/durations.json),
CARGO_TARGET_DIR as for cargo.
"""

import concurrent.futures as futures
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

RESULT = re.compile(r"test result: \w+\. (\d+) passed; (\d+) failed")


def build(log_dir: Path) -> list[dict]:
    cmd = ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    print("[tests] building:", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout.decode()
    binaries = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        package = msg["package_id"].split("#")[-1].split("@")[0].split("/")[-1]
        target = msg["target"]["name"]
        kind = msg["target"]["kind"][0]
        name = f"{package}-{target}" if package != target else target
        if kind == "bin":
            name += "-bin"  # a package's lib and bin targets may share a name
        binaries.append(
            {
                "name": name,
                "exe": msg["executable"],
                "cwd": str(Path(msg["manifest_path"]).parent),
            }
        )
    return binaries


def run_one(b: dict, log_dir: Path, threads: str) -> dict:
    log = log_dir / f"{b['name']}.log"
    started = time.monotonic()
    with open(log, "wb") as f:
        rc = subprocess.run(
            [b["exe"], "--test-threads", threads], cwd=b["cwd"], stdout=f, stderr=subprocess.STDOUT
        ).returncode
    text = log.read_text(errors="replace")
    passed = failed = 0
    for m in RESULT.finditer(text):
        passed += int(m.group(1))
        failed += int(m.group(2))
    if rc != 0 and failed == 0:
        failed = 1  # crashed or timed out before its summary
    return {**b, "rc": rc, "passed": passed, "failed": failed, "secs": time.monotonic() - started}


def main() -> int:
    log_dir = Path(sys.argv[1])
    log_dir.mkdir(parents=True, exist_ok=True)
    # Two binaries at a time: with three, the Kafka + Cassandra tests (servers and nodes on the
    # same two cores) missed their waits now and then (the suite takes ~14 min instead of ~10).
    jobs = int(os.environ.get("TEST_JOBS", "2"))
    threads = os.environ.get("TEST_THREADS", "2")
    binaries = build(log_dir)
    history_file = Path(os.environ.get("TEST_HISTORY", str(log_dir / "durations.json")))
    try:
        history = json.loads(history_file.read_text())
    except (OSError, ValueError):
        history = {}
    slow = ("e2e", "cluster", "durability", "shaping")  # a minute or more each
    binaries.sort(key=lambda b: -history.get(b["name"], 60 if any(k in b["name"] for k in slow) else 10))
    print(f"[tests] {len(binaries)} test binaries, {jobs} at a time", flush=True)
    results = []
    with futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for r in futures.as_completed([pool.submit(run_one, b, log_dir, threads) for b in binaries]):
            res = r.result()
            results.append(res)
            status = "ok" if res["rc"] == 0 else "FAILED"
            print(
                f"[tests] {status:6} {res['name']}: {res['passed']} passed, {res['failed']} failed "
                f"({res['secs']:.0f} s)",
                flush=True,
            )
            if res["rc"] != 0:
                sys.stdout.write((log_dir / f"{res['name']}.log").read_text(errors="replace")[-20000:])
                sys.stdout.flush()
    doc = subprocess.run(["cargo", "test", "--workspace", "--doc"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    doc_text = doc.stdout.decode(errors="replace")
    doc_passed = sum(int(m.group(1)) for m in RESULT.finditer(doc_text))
    doc_failed = sum(int(m.group(2)) for m in RESULT.finditer(doc_text)) or (1 if doc.returncode else 0)
    if doc.returncode:
        print(doc_text[-20000:])
    try:
        history_file.write_text(json.dumps({r["name"]: round(r["secs"]) for r in results}, indent=1))
    except OSError:
        pass
    passed = sum(r["passed"] for r in results) + doc_passed
    failed = sum(r["failed"] for r in results) + doc_failed
    slow = sorted(results, key=lambda r: -r["secs"])[:5]
    print("[tests] slowest:", ", ".join(f"{r['name']} {r['secs']:.0f} s" for r in slow))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or any(r["rc"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
