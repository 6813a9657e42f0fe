#!/usr/bin/env python3
"""A hostile primary for tests/integration/relay-hostile-t (a mock: no real
MTA misbehaves on demand).  Listens on [::1]:PORT; connection number i uses
MODES[i] and, once the list is used up, behaves as a plain SMTP server that
stores each message in OUTDIR.  Every mode is one way a primary can lie to
a relay client: malformed or oversized replies, code changes inside a
multi-line reply, NUL and bare CR, control octets, plaintext injected after
the 220 to STARTTLS, silence, or hanging up mid-transaction.

usage: relay-hostile.py PORT OUTDIR CERT KEY MODE[,MODE...]
"""
import os
import socket
import ssl
import sys
import threading
import time

PORT, OUTDIR, CERT, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
MODES = [m for m in sys.argv[5].split(',') if m]
lock = threading.Lock()
served = [0]


def log(msg):
    with open(os.path.join(OUTDIR, 'served.log'), 'a') as f:
        f.write(msg + '\n')


class Conn:
    def __init__(self, sock):
        self.s = sock
        self.buf = b''

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b'\n' not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        l, self.buf = self.buf.split(b'\n', 1)
        return l.rstrip(b'\r')


def ehlo_ok(c, starttls):
    c.send(b'250-hostile.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n' +
           (b'250-STARTTLS\r\n' if starttls else b'') + b'250 SIZE 100000000\r\n')


def smtp_good(c, mode, starttls):
    """A conforming server (after whatever the mode did first); stores messages."""
    while True:
        l = c.line()
        cmd = l[:4].upper()
        if cmd == b'EHLO' and mode == 'helo-only':
            c.send(b'502 5.5.1 EHLO not implemented\r\n')
        elif cmd == b'HELO':
            c.send(b'250 hostile.test\r\n')
        elif cmd == b'EHLO':
            ehlo_ok(c, starttls)
        elif l.upper() == b'STARTTLS' and starttls:
            if mode == 'tls-garbage':
                c.send(b'220 2.0.0 go ahead\r\n' + os.urandom(200))
                c.s.close()
                return
            extra = b'250-injected\r\n250 STARTTLS injection\r\n' if mode == 'inject' else b''
            c.send(b'220 2.0.0 go ahead\r\n' + extra)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(CERT, KEY)
            c.s = ctx.wrap_socket(c.s, server_side=True)
            c.buf = b''
            starttls = False
        elif cmd == b'MAIL':
            c.send(b'250 2.1.0 ok\r\n')
        elif cmd == b'RCPT':
            if mode == 'ctl550':
                c.send(b'550 5.1.1 \x1b[31mno\x07 such\x01user\r\n')
            elif mode == 'ctl450':
                c.send(b'450 4.2.0 \x1b[31mwait\x07\r\n')
            else:
                c.send(b'250 2.1.5 ok\r\n')
        elif cmd == b'DATA':
            if mode in ('ctl550', 'ctl450'):
                c.send(b'554 5.5.1 no valid recipients\r\n')
                # One transaction per session: the next message gets the next mode.
                return
            if mode == 'hangup-data':
                c.send(b'354 go\r\n')
                c.s.close()
                return
            c.send(b'354 go\r\n')
            body = []
            while True:
                dl = c.line()
                if dl == b'.':
                    break
                body.append(dl[1:] if dl.startswith(b'..') else dl)
            if mode == 'dot-garbage':
                c.send(b'250-ok\r\n4\x00\r\n')
                c.s.close()
                return
            name = os.path.join(OUTDIR, 'msg.%d.%f' % (os.getpid(), time.time()))
            with open(name, 'wb') as f:
                f.write(b'\n'.join(body) + b'\n')
            c.send(b'250 2.0.0 stored\r\n')
            # One message per session: the next one gets the next mode.
            return
        elif cmd == b'RSET' or cmd == b'NOOP':
            c.send(b'250 2.0.0 ok\r\n')
        elif cmd == b'QUIT':
            c.send(b'221 2.0.0 bye\r\n')
            return
        else:
            c.send(b'502 5.5.2 what\r\n')


def serve(sock):
    with lock:
        i = served[0]
        served[0] += 1
    mode = MODES[i] if i < len(MODES) else 'good'
    log(mode)
    c = Conn(sock)
    try:
        if mode == 'code-change':
            c.send(b'220-hostile.test\r\n221-changed\r\n220 ready\r\n')
        elif mode == 'long-line':
            c.send(b'220 ' + b'A' * 5000 + b'\r\n')
        elif mode == 'nul':
            c.send(b'220 hostile\x00test\r\n')
        elif mode == 'bare-cr':
            c.send(b'220 hostile\rMAIL FROM:<evil>\r\n')
        elif mode == 'many-lines':
            c.send(b'220 hostile.test\r\n')
            c.line()
            c.send(b'250-x\r\n' * 5000 + b'250 end\r\n')
        elif mode == 'short-cont':
            c.send(b'220 hostile.test\r\n')
            c.line()
            c.send(b'250-hostile.test\r\n2\r\n250 SIZE 1\r\n')
        elif mode == 'garbage':
            c.send(os.urandom(4096))
        elif mode == 'silent':
            time.sleep(8)
            return
        elif mode == 'no-code':
            c.send(b'hello there\r\n')
        else:
            c.send(b'220 hostile.test ESMTP\r\n')
            smtp_good(c, mode, mode in ('inject', 'good-tls', 'tls-garbage'))
            return
        # The client should give up on its own now; read until it does.
        c.s.settimeout(10)
        while c.s.recv(4096):
            pass
    except (EOFError, OSError, ssl.SSLError):
        pass
    finally:
        try:
            c.s.close()
        except OSError:
            pass


def main():
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('::1', PORT))
    srv.listen(64)
    # Ready: the test waits for this line rather than probing the port (a
    # probe would use up a mode).
    print('listening', flush=True)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


main()
