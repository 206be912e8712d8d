#!/usr/bin/env python3
"""A scripted SMTP client on Python's smtplib, for tests that check Herald's replies.

Usage: smtp_client.py PORT MODE < JSON
  send:     JSON is a list of {"from": ..., "to": [...], "data": <base64 message>}; each is
            sent in its own session (EHLO, MAIL, RCPT, DATA, no AUTH: the test's account
            relays from 127.0.0.0/8). Prints one JSON line per message: {"code", "text"}
            of the reply to the end of data (or of the command that failed).
  commands: JSON is a list of command lines sent in one session after EHLO; prints one
            JSON line per reply, and {"closed": true} when the server hangs up."""
import base64
import json
import smtplib
import sys


def send(port, cases):
    for case in cases:
        s = smtplib.SMTP("127.0.0.1", port, timeout=20)
        try:
            s.ehlo("py.test")
            data = base64.b64decode(case["data"])
            s.mail(case["from"])
            for rcpt in case["to"]:
                code, text = s.rcpt(rcpt)
                if code >= 400:
                    raise smtplib.SMTPResponseException(code, text)
            code, text = s.data(data)
            print(json.dumps({"code": code, "text": text.decode(errors="replace")}))
        except smtplib.SMTPResponseException as e:
            print(json.dumps({"code": e.smtp_code, "text": e.smtp_error.decode(errors="replace")}))
        finally:
            try:
                s.quit()
            except smtplib.SMTPException:
                pass


def commands(port, lines):
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    s.ehlo("py.test")
    for line in lines:
        try:
            code, text = s.docmd(line)
        except smtplib.SMTPServerDisconnected:
            print(json.dumps({"closed": True}))
            return
        print(json.dumps({"code": code, "text": text.decode(errors="replace")}))
        if code == 421:
            try:
                s.docmd("NOOP")
            except smtplib.SMTPServerDisconnected:
                print(json.dumps({"closed": True}))
            return


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    payload = json.load(sys.stdin)
    {"send": send, "commands": commands}[mode](port, payload)


if __name__ == "__main__":
    main()
