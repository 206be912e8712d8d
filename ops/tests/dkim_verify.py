#!/usr/bin/env python3
"""Verify every DKIM-Signature of a message with dkimpy, resolving keys through a real DNS
server (Knot, in the tests). Usage: dkim_verify.py DNS_IP DNS_PORT MESSAGE_FILE
Prints one line per signature ("ok d=... s=... a=..." or "fail ...") and exits 0 only if
there is at least one signature and all verify."""
import sys

import dkim
import dns.resolver


def main() -> int:
    ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [ip]
    resolver.port = port

    def dnsfunc(name, timeout=5):
        qname = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(qname, "TXT", lifetime=timeout)
        except Exception:
            return None
        return b"".join(b"".join(rr.strings) for rr in answer)

    message = open(path, "rb").read()
    header = message.split(b"\r\n\r\n", 1)[0]
    count = sum(1 for line in header.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    if count == 0:
        print("fail: no DKIM-Signature header")
        return 1
    ok = True
    for i in range(count):
        d = dkim.DKIM(message)
        try:
            good = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            good = False
            print(f"fail idx={i}: {e}")
        sig = d.signature_fields if hasattr(d, "signature_fields") else {}
        desc = " ".join(f"{k.decode()}={sig[k].decode()}" for k in (b"d", b"s", b"a") if k in sig)
        print(("ok " if good else "fail ") + desc)
        ok = ok and good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
