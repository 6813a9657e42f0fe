#!/usr/bin/env python3
"""TLS and raw TCP client for tests/integration/front-t.

Not a test on its own.  It drives the TLS front the ways the shell clients
(gnutls-cli, openssl s_client, curl) cannot: a ClientHello re-framed into
1-byte TLS records sent in 1-byte TCP segments, a TCP half-close after the
request, a session held open across registry changes, a hello that stalls
after 3 bytes, plain text, several concurrent connections, and megabytes
both ways at once (the front's bulk path and its backpressure).  TLS runs
through ssl.MemoryBIO over a plain socket, so the bytes on the wire are
under this script's control while the handshake itself is OpenSSL's, and
the backend certificate is verified against --cafile for the SNI name.

Every wait has a deadline.  Results are printed as key=value lines; the
exit status is 0 when the operation did what the sub-command expects.
"""

import argparse
import hashlib
import os
import select
import socket
import ssl
import sys
import time

DEADLINE = 10.0


def reframe(data):
    """Re-frame TLS records into records of one payload byte each."""
    out = bytearray()
    i = 0
    while i + 5 <= len(data):
        rtype, version = data[i], data[i + 1:i + 3]
        n = int.from_bytes(data[i + 3:i + 5], "big")
        for b in data[i + 5:i + 5 + n]:
            out += bytes([rtype]) + version + b"\x00\x01" + bytes([b])
        i += 5 + n
    if i != len(data):
        raise ValueError("not a sequence of whole TLS records")
    return bytes(out)


class Session:
    """One TLS session over a socket, with the record layer in our hands."""

    def __init__(self, host, port, sni, cafile, split=False, rcvbuf=0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:
            # Before connect, so the window stays small: the front soon finds us full.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(DEADLINE)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = ssl.create_default_context(cafile=cafile)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=sni)
        self.eof = False
        self._handshake(split)

    def _flush(self, split=False):
        data = self.out.read()
        if not data:
            return
        if split:
            # One byte per send with Nagle off: one byte per TCP segment.
            for b in reframe(data):
                self.sock.send(bytes([b]))
        else:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            self.inc.write_eof()
        else:
            self.inc.write(data)

    def _handshake(self, split):
        first = True
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush(split and first)
                first = False
                if self.eof:
                    raise ConnectionError("closed during the handshake")
                self._fill()

    def send(self, data):
        self.tls.write(data)
        self._flush()

    def half_close(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_until(self, token, deadline):
        """Read until token arrives; returns what was read."""
        buf = b""
        while token not in buf and time.monotonic() < deadline:
            try:
                buf += self.tls.read(65536)
            except ssl.SSLWantReadError:
                if self.eof:
                    break
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
        return buf

    def read_eof(self, deadline):
        """Read until the peer closes: "eof", "alert:REASON" or "timeout"."""
        while time.monotonic() < deadline:
            try:
                if not self.tls.read(65536):
                    return "eof"
            except ssl.SSLWantReadError:
                if self.eof:
                    return "eof"
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return "eof"
            except ssl.SSLError as e:
                # A peer that saw our TCP FIN without close_notify may say so.
                return "alert:%s" % e.reason
        return "timeout"


def echo_once(sess, token):
    sess.send(token + b"\n")
    got = sess.read_until(token, time.monotonic() + DEADLINE)
    return token in got


def cmd_echo(a):
    start = time.monotonic()
    try:
        sess = Session(a.host, a.port, a.sni, a.cafile, split=a.split)
    except (OSError, ssl.SSLError, ConnectionError) as e:
        print("handshake_error=%s elapsed=%.3f" % (getattr(e, "reason", None) or e,
                                                    time.monotonic() - start))
        return 1
    print("handshake=ok version=%s" % sess.tls.version())
    print("local_port=%d" % sess.sock.getsockname()[1])
    token = a.token.encode()
    sess.send(token + b"\n")
    if a.half_close:
        sess.half_close()
        print("half_closed=yes")
    got = sess.read_until(token, time.monotonic() + DEADLINE)
    print("echoed=%s" % ("yes" if token in got else "no"))
    if a.half_close:
        # After the echo the backend sees our EOF and closes: that must reach us too.
        print("peer_closed=%s" % sess.read_eof(time.monotonic() + DEADLINE))
    return 0 if token in got else 1


def cmd_bulk(a):
    """Send size bytes and read them back at the same time, so both ways stay full."""
    sess = Session(a.host, a.port, a.sni, a.cafile, rcvbuf=a.rcvbuf)
    # Lines of letters: gnutls-serv --echo answers line by line and rewrites CRLF.
    data = bytearray(97 + b % 26 for b in hashlib.shake_256(b"front-t").digest(a.size))
    data[1023::1024] = b"\n" * len(data[1023::1024])
    data = bytes(data)
    sock = sess.sock
    sock.setblocking(False)
    sent, outbuf, got = 0, b"", bytearray()
    deadline = time.monotonic() + 60
    eof = False
    paused = a.pause <= 0
    while len(got) < len(data) and not eof and time.monotonic() < deadline:
        if not paused and sent >= len(data) // 2:
            # Stop reading for a while: the front must hold back, not drop or spin.
            time.sleep(a.pause)
            paused = True
        if not outbuf and sent < len(data):
            sess.tls.write(data[sent:sent + 16384])
            sent = min(sent + 16384, len(data))
            outbuf = sess.out.read()
        r, w, _ = select.select([sock], [sock] if outbuf else [], [], 1.0)
        if w:
            try:
                outbuf = outbuf[sock.send(outbuf):]
            except BlockingIOError:
                pass
        if r:
            try:
                d = sock.recv(262144)
            except BlockingIOError:
                continue
            if not d:
                break
            sess.inc.write(d)
            while True:
                try:
                    chunk = sess.tls.read(262144)
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    chunk = b""
                if not chunk:
                    eof = True
                    break
                got += chunk
            outbuf += sess.out.read()	# post-handshake messages, if any
    match = bytes(got) == data
    print("bulk_sent=%d echoed=%d match=%s" % (sent, len(got), "yes" if match else "no"))
    return 0 if match else 1


def wait_file(path, deadline):
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def cmd_hold(a):
    """Echo, signal READY, wait for GO, echo again on the same session."""
    sess = Session(a.host, a.port, a.sni, a.cafile)
    first = echo_once(sess, b"before-" + a.token.encode())
    print("before=%s" % ("yes" if first else "no"), flush=True)
    with open(a.ready, "w") as f:
        f.write("ready\n")
    if not wait_file(a.go, time.monotonic() + 60):
        print("go=timeout")
        return 1
    second = echo_once(sess, b"after-" + a.token.encode())
    print("after=%s" % ("yes" if second else "no"))
    return 0 if first and second else 1


def closed_within(s, seconds):
    """Whether the peer closes (EOF or reset) within seconds; data is ignored."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        s.settimeout(left)
        try:
            if not s.recv(4096):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def cmd_stall(a):
    """Send a few bytes of a hello and stall; report when the front closes."""
    s = socket.create_connection((a.host, a.port), timeout=DEADLINE)
    start = time.monotonic()
    s.sendall(bytes.fromhex(a.hex))
    closed = closed_within(s, a.wait)
    print("closed=%s elapsed=%.3f" % ("yes" if closed else "no", time.monotonic() - start))
    return 0 if closed else 1


def cmd_plain(a):
    """Send a line of plain text; report what comes back before the close."""
    s = socket.create_connection((a.host, a.port), timeout=DEADLINE)
    start = time.monotonic()
    s.sendall(b"GET / HTTP/1.0\r\nHost: imap.example.test\r\n\r\n")
    got = b""
    closed = False
    s.settimeout(DEADLINE)
    try:
        while True:
            d = s.recv(4096)
            if not d:
                closed = True
                break
            got += d
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    print("closed=%s elapsed=%.3f reply=%s" % ("yes" if closed else "no",
                                               time.monotonic() - start, got.hex() or "-"))
    return 0 if closed else 1


def cmd_limit(a):
    """Open n connections, then one more: the extra one is closed, the n are not."""
    held = [socket.create_connection((a.host, a.port), timeout=DEADLINE) for _ in range(a.n)]
    extra = socket.create_connection((a.host, a.port), timeout=DEADLINE)
    refused = closed_within(extra, 1.0)
    alive = sum(1 for s in held if not closed_within(s, 0.1))
    print("alive=%d extra_closed=%s" % (alive, "yes" if refused else "no"))
    for s in held + [extra]:
        s.close()
    return 0 if refused and alive == a.n else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--sni", required=True)
    e.add_argument("--cafile", required=True)
    e.add_argument("--token", required=True)
    e.add_argument("--split", action="store_true",
                   help="send the ClientHello as 1-byte records in 1-byte segments")
    e.add_argument("--half-close", action="store_true",
                   help="shut the TCP write side right after the request")
    h = sub.add_parser("hold")
    h.add_argument("--sni", required=True)
    h.add_argument("--cafile", required=True)
    h.add_argument("--token", required=True)
    h.add_argument("--ready", required=True)
    h.add_argument("--go", required=True)
    s = sub.add_parser("stall")
    s.add_argument("--hex", default="160301")
    s.add_argument("--wait", type=float, default=DEADLINE)
    b = sub.add_parser("bulk")
    b.add_argument("--sni", required=True)
    b.add_argument("--cafile", required=True)
    b.add_argument("--size", type=int, default=4 << 20)
    b.add_argument("--pause", type=float, default=0,
                   help="halfway through, stop reading for this many seconds")
    b.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of our socket")
    sub.add_parser("plain")
    lim = sub.add_parser("limit")
    lim.add_argument("--n", type=int, required=True)
    a = p.parse_args()
    return {"echo": cmd_echo, "hold": cmd_hold, "stall": cmd_stall, "plain": cmd_plain,
            "limit": cmd_limit, "bulk": cmd_bulk}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
