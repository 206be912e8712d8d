#!/usr/bin/env python3
"""Verify a batch of DKIM-signed messages with dkimpy, in one process.

Usage: verify_batch.py KEYS_JSON MESSAGES_FILE
KEYS_JSON maps DNS names (`<selector>._domainkey.<domain>`) to their TXT values.
MESSAGES_FILE holds the messages, each as an ASCII decimal length, a newline, then that
many bytes. Every DKIM-Signature of every message is verified. Prints one line per failing
signature (`fail <message index> <signature index> <reason>`), then `checked <messages>
<signatures> <failures>`; exits 0 only when every signature verifies."""
import json
import sys

import dkim


def messages(path):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        size = int(data[pos:end])
        yield data[end + 1 : end + 1 + size]
        pos = end + 1 + size


def main() -> int:
    keys = {k.lower().encode(): v.encode() for k, v in json.load(open(sys.argv[1])).items()}

    def dnsfunc(name, timeout=5):
        return keys.get(name.lower().rstrip(b".") if isinstance(name, bytes) else name.lower().encode())

    count = signatures = failures = 0
    for i, message in enumerate(messages(sys.argv[2])):
        count += 1
        header = message.split(b"\r\n\r\n", 1)[0]
        n = sum(1 for line in header.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
        if n == 0:
            failures += 1
            print(f"fail {i} - no DKIM-Signature header")
        for idx in range(n):
            signatures += 1
            try:
                good = dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc)
                reason = "body hash or signature mismatch"
            except dkim.DKIMException as e:
                good, reason = False, str(e)
            if not good:
                failures += 1
                print(f"fail {i} {idx} {reason}")
    print(f"checked {count} {signatures} {failures}")
    return 0 if failures == 0 and count > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
