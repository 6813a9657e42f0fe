#!/usr/bin/env python3
"""A raw SMTP client for tests that real clients cannot express: bytes sent
exactly as given (bare CR, bare LF, several commands in one send), and a TLS
handshake started at a chosen point.

    smtp-client.py [-6] [--early TEXT] HOST PORT STEP...

--early sends TEXT right after connecting, before the greeting is read.

STEP is one of
    N|TEXT    send TEXT (Python escapes: \\r \\n \\x00) in ONE send(), then
              read until N more final reply lines ("250 ...") arrived;
              N may be 0 (read nothing) or * (read until the server closes)
    tls       TLS handshake now (no certificate check), continue over TLS
    quiet     fail unless nothing arrives within 0.5 s (no stray replies)
    sleep:S   wait S seconds
Every reply line is printed as "<- LINE"; "EOF" when the server closed.
Exit 0, or 1 on a timeout (5 s without the replies asked for) or error.
"""
import codecs
import socket
import ssl
import sys
import time


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def replies(self, want):
        """Read until `want` final reply lines, or EOF for want None."""
        finals = 0
        deadline = time.time() + 5
        while want is None or finals < want:
            while b"\r\n" in self.buf and (want is None or finals < want):
                line, self.buf = self.buf.split(b"\r\n", 1)
                text = line.decode("latin-1")
                print("<- " + text)
                if len(text) >= 4 and text[:3].isdigit() and text[3] == " ":
                    finals += 1
            if want is not None and finals >= want:
                break
            if self.eof:
                print("EOF")
                return want is None
            left = deadline - time.time()
            if left <= 0:
                print("TIMEOUT")
                return False
            self.fill(left)
        return True


def main():
    args = sys.argv[1:]
    family = socket.AF_INET
    early = None
    while args and args[0].startswith("-"):
        if args[0] == "-6":
            family = socket.AF_INET6
            args = args[1:]
        elif args[0] == "--early":
            early = codecs.decode(args[1], "unicode_escape").encode("latin-1")
            args = args[2:]
        else:
            print("unknown option " + args[0])
            return 2
    host, port, steps = args[0], int(args[1]), args[2:]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((host, port))
    conn = Conn(sock)
    if early is not None:
        sock.sendall(early)
    if not conn.replies(1):
        return 1
    for step in steps:
        if step == "tls":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if conn.buf:
                print("STRAY-PLAINTEXT " + repr(conn.buf))
                return 1
            conn.sock = ctx.wrap_socket(conn.sock, server_hostname=host)
            print("TLS " + conn.sock.version())
        elif step == "quiet":
            if conn.buf or conn.fill(0.5):
                print("STRAY " + repr(conn.buf))
                return 1
            if conn.eof:
                print("EOF")
                return 1
        elif step.startswith("sleep:"):
            time.sleep(float(step[6:]))
        else:
            n, text = step.split("|", 1)
            data = codecs.decode(text, "unicode_escape").encode("latin-1")
            try:
                conn.sock.sendall(data)
            except OSError as e:
                print("SEND-FAILED " + str(e))
                return 1
            if not conn.replies(None if n == "*" else int(n)):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
