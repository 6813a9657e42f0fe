#!/usr/bin/env python3
"""A recording SMTP sender for tests/integration/pipeline-crash-t and
spool-full-t: several threads send one message per connection until a
deadline or until STOP-FILE exists (a message already started is finished,
so stopping never cuts a transaction), and log what happened to each
message, one line per event, flushed at once:

    B TOKEN           the transaction began (before MAIL FROM)
    D TOKEN           the final dot was sent
    A TOKEN QUEUE-ID  the server answered 250 to the data
    R TOKEN CODE      the server refused it (CODE: the reply to MAIL, RCPT,
                      DATA or the data), so it must never be delivered
    X TOKEN STAGE     the connection broke (STAGE: before-dot or after-dot)

Each message carries its token in the Subject, in "X-Load-Token:" and in
the body.  Connection failures (the server killed and restarting) are
retried after a short pause.

usage: pipeline-load.py HOST PORT SECONDS THREADS LOG [STOP-FILE [RCPT [BODY-LINES [MAX]]]]
(MAX: stop after beginning that many messages in all; an empty STOP-FILE: none)
"""
import os
import socket
import sys
import threading
import time


class Refused(Exception):
    pass


def reply(f):
    """One whole reply: (code, last line)."""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        text = line.decode("latin-1").rstrip("\r\n")
        if len(text) < 4 or text[3] != "-":
            return int(text[:3]), text


def worker(a, n, log):
    seq = 0
    filler = b"".join(b"line %04d of a pipeline test message, padding padding padding\r\n" % i
                      for i in range(a.lines))
    while time.time() < a.deadline and not (a.stop and os.path.exists(a.stop)):
        if a.max is not None:
            with a.lock:
                if a.max <= 0:
                    return
                a.max -= 1
        seq += 1
        token = "p%d-%d-%d" % (n, seq, os.getpid())
        stage = "connect"
        try:
            s = socket.create_connection((a.host, a.port), timeout=30)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            f = s.makefile("rb")
            if reply(f)[0] != 220:
                raise ConnectionError("greeting")
            s.sendall(b"EHLO load.example\r\n")
            if reply(f)[0] != 250:
                raise ConnectionError("ehlo")
            log("B " + token)
            stage = "before-dot"
            for cmd in (b"MAIL FROM:<load@example.org>\r\n",
                        b"RCPT TO:<" + a.rcpt.encode() + b">\r\n", b"DATA\r\n"):
                s.sendall(cmd)
                code, _ = reply(f)
                if code >= 400 and code != 354:
                    raise Refused(code)
            s.sendall(b"Subject: pipeline " + token.encode() + b"\r\nX-Load-Token: " +
                      token.encode() + b"\r\n\r\ntoken " + token.encode() + b"\r\n" +
                      filler + b".\r\n")
            log("D " + token)
            stage = "after-dot"
            code, text = reply(f)
            if code == 250 and "queued as " in text:
                log("A %s %s" % (token, text.split("queued as ")[1].split()[0]))
            else:
                raise Refused(code)
            try:
                s.sendall(b"QUIT\r\n")
                reply(f)
            except (OSError, ConnectionError, ValueError):
                pass
        except Refused as e:
            log("R %s %d" % (token, e.args[0]))
            time.sleep(a.pause)
        except (OSError, ConnectionError, ValueError):
            if stage != "connect":
                log("X %s %s" % (token, stage))
            time.sleep(0.05)
        finally:
            s.close()


class Args:
    pass


def main():
    a = Args()
    a.host, a.port = sys.argv[1], int(sys.argv[2])
    a.deadline = time.time() + float(sys.argv[3])
    threads = int(sys.argv[4])
    out = open(sys.argv[5], "a")
    a.stop = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
    a.rcpt = sys.argv[7] if len(sys.argv) > 7 else "user@reg.test"
    a.lines = int(sys.argv[8]) if len(sys.argv) > 8 else 40
    a.max = int(sys.argv[9]) if len(sys.argv) > 9 else None
    a.pause = 0.05
    a.lock = threading.Lock()
    lock = threading.Lock()

    def log(line):
        with lock:
            out.write(line + "\n")
            out.flush()

    ts = [threading.Thread(target=worker, args=(a, i, log)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
