#!/usr/bin/env python3
"""Reads a delivered message with Python's own MIME and HTML parsers (independent of Herald's)
and prints JSON: each leaf part (content type, transfer encoding, charset, decoded text), the
href of every <a>/<area> and the src of every <img> in HTML parts (attribute values with
character references decoded, as a browser sees them), and the List-Unsubscribe fields.
Usage: engagement_parts.py MESSAGE_FILE"""
import email
import email.policy
import json
import sys
from html.parser import HTMLParser


class Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("a", "area") and "href" in a:
            self.links.append({"href": a["href"], "notrack": "data-herald-notrack" in a})
        if tag == "img" and "src" in a:
            self.images.append(a["src"])

    handle_startendtag = handle_starttag


def main() -> int:
    raw = open(sys.argv[1], "rb").read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = {
        "parts": [],
        "links": [],
        "images": [],
        "list_unsubscribe": msg.get("List-Unsubscribe"),
        "list_unsubscribe_post": msg.get("List-Unsubscribe-Post"),
        "x_herald_options": msg.get("X-Herald-Options"),
    }
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue
        text = part.get_content() if part.get_content_maintype() == "text" else None
        out["parts"].append({
            "type": part.get_content_type(),
            "cte": (part.get("Content-Transfer-Encoding") or "7bit").lower(),
            "charset": part.get_content_charset(),
            "attachment": part.get_content_disposition() == "attachment",
            "text": text,
        })
        if part.get_content_type() == "text/html" and part.get_content_disposition() != "attachment":
            p = Links()
            p.feed(text)
            out["links"] += p.links
            out["images"] += p.images
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
