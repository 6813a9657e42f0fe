#!/usr/bin/env python3
"""Peers for tests/integration/hostile-t: hostile ones, and the well-behaved
TLS client whose success rate the test measures.  Not a test on its own.

  hostile-peers.py tls-loop HOST PORT SNI CAFILE STOP-FILE SECONDS
      The well-behaved client: one TLS connection after another through the
      front (certificate verified for SNI), each sending a token and reading
      its echo, until STOP-FILE exists or SECONDS pass.  Prints
      "ok=N fail=N max_ms=N reasons=..." at the end.
  hostile-peers.py idle HOST PORT COUNT SECONDS [RATE [SOURCE-PREFIX]]
      COUNT connections that send nothing, opened at RATE per second (0: as
      fast as possible; a burst larger than the listen backlog is partly
      dropped by the kernel, unseen by the server), from SOURCE-PREFIX.1, .2,
      ... in turn when given (e.g. 127.0.1), held until the server closes
      them or SECONDS pass.  Prints "opened=N closed=N open=N refused=N open_secs=S
      first_close=S median_close=S last_close=S", close times counted from
      when the connection was opened, open_secs the time to open them all.
  hostile-peers.py hello-idle HOST PORT SNI COUNT SECONDS
      COUNT TLS clients that send a ClientHello for SNI and wait for the
      server's answer or its close.  Prints "closed=N open=N answered=N
      first_close=S median_close=S last_close=S".
  hostile-peers.py dribble HOST PORT COUNT HEX|@FILE|hello:SNI INTERVAL SECONDS
      COUNT connections, each sending the given bytes (hello:SNI: a real
      ClientHello) one byte every
      INTERVAL seconds (in a loop) until the server closes it or SECONDS
      pass.  Prints "closed=N open=N first_close=S median_close=S
      last_close=S sent_max=N".
  hostile-peers.py stuck-backend PORT LOG
      A backend on [::1]:PORT that accepts and reads but never answers.
  hostile-peers.py hostile-primary PORT OUTDIR MODE[,MODE...]
      An SMTP primary on [::1]:PORT (a mock by necessity: no real MTA
      misbehaves on demand).  Connection i gets MODE[i % n]; while the file
      OUTDIR/behave exists every connection gets a well-behaved server that
      stores each message in OUTDIR/msg.*.  Modes:
        long-line   a 220 line of 5000 octets
        many-lines  a 5000-line reply to EHLO
        garbage     64 KiB of random octets instead of a greeting
        slow-lines  a multi-line 220 reply, one "220-" line every 0.5 s
        slow-bytes  a multi-line 220 reply, one octet every 0.3 s
      (the slow ones go on until the client gives up or OUTDIR/behave appears)
      OUTDIR/served.log gets "MODE held=SECONDS" when each connection ends.

Every wait has a deadline; nothing but loopback is contacted.
"""
import os
import resource
import selectors
import socket
import ssl
import sys
import threading
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tls_loop(host, port, sni, cafile, stop, seconds):
    ctx = ssl.create_default_context(cafile=cafile)
    deadline = time.time() + float(seconds)
    ok = fail = 0
    worst = 0.0
    reasons = {}
    n = 0
    while time.time() < deadline and not os.path.exists(stop):
        n += 1
        t0 = time.time()
        token = b"well-behaved %d\n" % n
        try:
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=sni) as s:
                    s.sendall(token)
                    got = b""
                    while not got.endswith(b"\n"):
                        d = s.recv(4096)
                        if not d:
                            break
                        got += d
                    if got != token:
                        raise ValueError("echo mismatch")
            ok += 1
            worst = max(worst, time.time() - t0)
        except (OSError, ValueError, ssl.SSLError) as e:
            fail += 1
            r = type(e).__name__
            reasons[r] = reasons.get(r, 0) + 1
            time.sleep(0.05)
        time.sleep(0.02)
    print("ok=%d fail=%d max_ms=%d reasons=%s" % (
        ok, fail, int(worst * 1000),
        ",".join("%s:%d" % kv for kv in sorted(reasons.items())) or "-"))
    return 0


def summary(times):
    times = sorted(times)
    if not times:
        return "first_close=- median_close=- last_close=-"
    return "first_close=%.2f median_close=%.2f last_close=%.2f" % (
        times[0], times[len(times) // 2], times[-1])


def idle(host, port, count, seconds, rate="0", prefix=None):
    raise_nofile()
    sel = selectors.DefaultSelector()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    opened = refused = 0
    start = {}
    closes = []
    t_open = time.time()
    for i in range(int(count)):
        s = socket.socket(family, socket.SOCK_STREAM)
        if prefix:
            s.bind(("%s.%d" % (prefix, i % 250 + 1), 0))
        s.setblocking(False)
        try:
            s.connect((host, int(port)))
        except BlockingIOError:
            pass
        except OSError:
            refused += 1
            s.close()
            continue
        sel.register(s, selectors.EVENT_READ)
        start[s] = time.time()
        opened += 1
        if float(rate) > 0 and opened % 50 == 0:
            time.sleep(max(0.0, t_open + opened / float(rate) - time.time()))
    open_secs = time.time() - t_open
    deadline = time.time() + float(seconds)
    while start and time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                d = s.recv(4096)
            except ConnectionRefusedError:
                refused += 1
                d = None
            except OSError:
                d = b""
            if d:
                continue	# a greeting or a 421: keep reading until the close
            if d is not None:
                closes.append(time.time() - start[s])
            sel.unregister(s)
            del start[s]
            s.close()
    print("opened=%d closed=%d open=%d refused=%d open_secs=%.2f %s" % (
        opened - refused, len(closes), len(start), refused, open_secs, summary(closes)))
    for s in list(start):
        s.close()
    return 0


def client_hello(sni):
    """The first flight of a real TLS client (OpenSSL's), without a network."""
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def hello_idle(host, port, sni, count, seconds):
    """COUNT TLS clients that send their ClientHello and then wait for an answer."""
    hello = client_hello(sni)
    sel = selectors.DefaultSelector()
    start = {}
    closes = []
    answered = 0
    for _ in range(int(count)):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(hello)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        start[s] = time.time()
    deadline = time.time() + float(seconds)
    while start and time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if d:
                answered += 1
                continue
            closes.append(time.time() - start[s])
            sel.unregister(s)
            del start[s]
            s.close()
    print("closed=%d open=%d answered=%d %s" % (len(closes), len(start), answered,
                                                summary(closes)))
    for s in list(start):
        s.close()
    return 0


def dribble(host, port, count, data, interval, seconds):
    if data.startswith("@"):
        payload = open(data[1:], "rb").read()
    elif data.startswith("hello:"):
        payload = client_hello(data[6:])
    else:
        payload = bytes.fromhex(data)
    conns = []
    for _ in range(int(count)):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.setblocking(False)
        conns.append({"s": s, "t0": time.time(), "i": 0, "closed": None})
    # The first octet after one interval: an SMTP server's greeting comes first.
    time.sleep(float(interval))
    deadline = time.time() + float(seconds)
    while time.time() < deadline and any(c["closed"] is None for c in conns):
        for c in conns:
            if c["closed"] is not None:
                continue
            s = c["s"]
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        c["closed"] = time.time() - c["t0"]
                        break
            except BlockingIOError:
                pass
            except OSError:
                c["closed"] = time.time() - c["t0"]
            if c["closed"] is not None:
                continue
            try:
                s.send(payload[c["i"] % len(payload):c["i"] % len(payload) + 1])
                c["i"] += 1
            except BlockingIOError:
                pass
            except OSError:
                c["closed"] = time.time() - c["t0"]
        time.sleep(float(interval))
    closes = sorted(c["closed"] for c in conns if c["closed"] is not None)
    print("closed=%d open=%d %s sent_max=%d" % (
        len(closes), sum(1 for c in conns if c["closed"] is None), summary(closes),
        max(c["i"] for c in conns)))
    for c in conns:
        c["s"].close()
    return 0


def stuck_backend(port, logf):
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::1", int(port)))
    srv.listen(256)
    lock = threading.Lock()

    def hold(s):
        t0 = time.time()
        n = 0
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                n += len(d)
        except OSError:
            pass
        with lock, open(logf, "a") as f:
            f.write("held=%.2f read=%d\n" % (time.time() - t0, n))
        s.close()

    print("listening", flush=True)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=hold, args=(s,), daemon=True).start()


class Line:
    def __init__(self, s):
        self.s = s
        self.buf = b""

    def get(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")


def primary_good(s, outdir):
    c = Line(s)
    s.sendall(b"220 primary.test ESMTP\r\n")
    while True:
        line = c.get()
        cmd = line[:4].upper()
        if cmd in (b"EHLO", b"HELO"):
            s.sendall(b"250-primary.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif cmd in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            s.sendall(b"250 2.0.0 ok\r\n")
        elif cmd == b"DATA":
            s.sendall(b"354 go\r\n")
            body = []
            while True:
                dl = c.get()
                if dl == b".":
                    break
                body.append(dl[1:] if dl.startswith(b"..") else dl)
            name = os.path.join(outdir, "msg.%d.%f" % (os.getpid(), time.time()))
            with open(name, "wb") as f:
                f.write(b"\n".join(body) + b"\n")
            s.sendall(b"250 2.0.0 stored\r\n")
        elif cmd == b"QUIT":
            s.sendall(b"221 2.0.0 bye\r\n")
            return
        else:
            s.sendall(b"502 5.5.2 what\r\n")


def primary_serve(s, mode, outdir, lock):
    t0 = time.time()
    behave = os.path.join(outdir, "behave")
    try:
        if mode == "good":
            primary_good(s, outdir)
        elif mode == "long-line":
            s.sendall(b"220 " + b"A" * 5000 + b"\r\n")
        elif mode == "many-lines":
            s.sendall(b"220 hostile.test\r\n")
            Line(s).get()
            s.sendall(b"250-x\r\n" * 5000 + b"250 end\r\n")
        elif mode == "garbage":
            s.sendall(os.urandom(65536))
        elif mode == "slow-lines":
            while not os.path.exists(behave):
                s.sendall(b"220-slow line\r\n")
                time.sleep(0.5)
            return
        elif mode == "slow-bytes":
            while not os.path.exists(behave):
                for b in b"220-slow bytes\r\n":
                    s.sendall(bytes([b]))
                    time.sleep(0.3)
            return
        if mode != "good":
            # Wait for the client to give up (bounded: the test ends us anyway).
            s.settimeout(600)
            while s.recv(65536):
                pass
    except (OSError, EOFError):
        pass
    finally:
        s.close()
        with lock, open(os.path.join(outdir, "served.log"), "a") as f:
            f.write("%s held=%.2f\n" % (mode, time.time() - t0))


def hostile_primary(port, outdir, modes):
    modes = [m for m in modes.split(",") if m]
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::1", int(port)))
    srv.listen(256)
    lock = threading.Lock()
    i = 0
    print("listening", flush=True)
    while True:
        s, _ = srv.accept()
        if os.path.exists(os.path.join(outdir, "behave")):
            mode = "good"
        else:
            mode = modes[i % len(modes)]
            i += 1
        threading.Thread(target=primary_serve, args=(s, mode, outdir, lock), daemon=True).start()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "tls-loop":
        return tls_loop(*args)
    if cmd == "idle":
        return idle(*args)
    if cmd == "hello-idle":
        return hello_idle(*args)
    if cmd == "dribble":
        return dribble(*args)
    if cmd == "stuck-backend":
        return stuck_backend(*args)
    if cmd == "hostile-primary":
        return hostile_primary(*args)
    print("unknown command " + cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
