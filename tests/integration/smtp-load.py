#!/usr/bin/env python3
"""Send messages for a while from several threads and record, for each
message, whether the sender saw its 250 (for the crash test).

    smtp-load.py HOST PORT SECONDS THREADS ACKED-FILE SENT-FILE

Each message carries "X-Load-Token: T" in its header.  SENT-FILE gets the
token of every message whose final dot was sent; ACKED-FILE gets
"TOKEN QUEUE-ID" for every 250 received.  Both are flushed line by line, so
they are right up to the moment the test reads them.  Connection errors
(the server being killed and restarted) are retried after a short pause.
"""
import socket
import sys
import threading
import time


def reply(f):
    """One whole reply; returns (code, last line)."""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        text = line.decode("latin-1").rstrip("\r\n")
        if len(text) < 4 or text[3] != "-":
            return int(text[:3]), text


def worker(host, port, deadline, n, acked, sent, lock):
    seq = 0
    body = b"".join(b"line %04d of a crash-test message, padding padding padding\r\n" % i
                    for i in range(40))
    while time.time() < deadline:
        seq += 1
        token = "t%d-%d-%d" % (n, seq, int(time.time() * 1000))
        try:
            s = socket.create_connection((host, port), timeout=5)
            f = s.makefile("rb")
            if reply(f)[0] != 220:
                raise ConnectionError("greeting")
            for cmd in (b"EHLO load.example\r\n", b"MAIL FROM:<load@example.org>\r\n",
                        b"RCPT TO:<user@reg.test>\r\n", b"DATA\r\n"):
                s.sendall(cmd)
                code, _ = reply(f)
                if code >= 400:
                    raise ConnectionError("refused")
            s.sendall(b"Subject: crash test\r\nX-Load-Token: " + token.encode() +
                      b"\r\n\r\n" + body + b".\r\n")
            with lock:
                sent.write(token + "\n")
                sent.flush()
            code, text = reply(f)
            if code == 250 and "queued as " in text:
                with lock:
                    acked.write("%s %s\n" % (token, text.split("queued as ")[1].strip()))
                    acked.flush()
            s.sendall(b"QUIT\r\n")
            s.close()
        except (OSError, ConnectionError, ValueError):
            time.sleep(0.05)


def main():
    host, port, secs, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    acked = open(sys.argv[5], "a")
    sent = open(sys.argv[6], "a")
    lock = threading.Lock()
    deadline = time.time() + secs
    ts = [threading.Thread(target=worker, args=(host, port, deadline, i, acked, sent, lock))
          for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
