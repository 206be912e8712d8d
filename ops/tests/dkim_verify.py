#!/usr/bin/env python3
"""Verify every DKIM-Signature of a message with dkimpy, resolving keys through a real DNS
server (Knot, in the tests). Usage: dkim_verify.py DNS_IP DNS_PORT MESSAGE_FILE [ZONE=IP:PORT ...]
Each ZONE=IP:PORT sends questions for names under ZONE to that server instead: with it, a
customer's `_domainkey` CNAME served by Knot is followed into Herald's own zone served by
Herald, as a recursive resolver would (these authoritative servers do not recurse).
Prints one line per signature ("ok d=... s=... a=..." or "fail ...") and exits 0 only if
there is at least one signature and all verify."""
import sys

import dkim
import dns.rdatatype
import dns.resolver


def main() -> int:
    ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def make(ip, port):
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [ip]
        r.port = port
        return r

    default = make(ip, port)
    zones = []
    for spec in sys.argv[4:]:
        zone, addr = spec.split("=", 1)
        zip_, zport = addr.rsplit(":", 1)
        zones.append((zone.strip(".").lower(), make(zip_, int(zport))))

    def resolver_for(qname):
        n = qname.strip(".").lower()
        for zone, r in zones:
            if n == zone or n.endswith("." + zone):
                return r
        return default

    def dnsfunc(name, timeout=5):
        qname = name.decode() if isinstance(name, bytes) else name
        for _ in range(8):  # follow at most 8 CNAMEs
            try:
                answer = resolver_for(qname).resolve(qname, "TXT", lifetime=timeout, raise_on_no_answer=False)
            except Exception:
                return None
            rrset = answer.response.answer
            txt = [rr for rrs in rrset if rrs.rdtype == dns.rdatatype.TXT for rr in rrs]
            if txt:
                return b"".join(b"".join(rr.strings) for rr in txt[:1])
            cname = [rr for rrs in rrset if rrs.rdtype == dns.rdatatype.CNAME for rr in rrs]
            if not cname:
                return None
            qname = cname[-1].target.to_text()
        return None

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
