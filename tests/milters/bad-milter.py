#!/usr/bin/env python3
"""A mock milter for hostile input: libmilter cannot be made to send
malformed packets, so this speaks the milter protocol by hand and breaks it
in the way a mode says, at RCPT (or where the mode says).  Everything else
is answered like a well-behaved milter.  One process serves every mode, each
on its own unix socket DIR/MODE.sock.

    bad-milter.py DIR

Modes:
  unterminated-replycode  REPLYCODE "550 5.7.1 no" without its NUL
  bad-replycode           REPLYCODE "250 ok" (not 4xx/5xx)
  long-replycode          REPLYCODE with a 2000-octet line
  huge-length             a length field of 0x7fffffff, then silence
  zero-length             a length field of 0
  unknown-reply           reply command 'Z'
  header-injection        at end of message, a header value with CRLF + new header
  unnegotiated            at end of message, QUARANTINE without negotiating it
  close-at-rcpt           close the connection at RCPT
  unsolicited             answer RCPT with two CONTINUEs (the second unasked)
  silent                  never answer the option negotiation
  bad-optneg              answer OPTNEG with version 99
  trickle                 a correct REJECT at RCPT, one octet every 0.2 s
"""
import os
import socket
import struct
import sys
import threading
import time

MODES = ("unterminated-replycode", "bad-replycode", "long-replycode", "huge-length",
         "zero-length", "unknown-reply", "header-injection", "unnegotiated",
         "close-at-rcpt", "unsolicited", "silent", "bad-optneg", "trickle")

NEED_REPLY = set(b"CHMRTLNBE")


def packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def broken_reply(MODE, conn, stage):
    """Send the mode's bad answer for stage; True when the mode handled it."""
    if MODE == "unterminated-replycode" and stage == b"R":
        conn.sendall(packet(b"y", b"550 5.7.1 no"))
    elif MODE == "bad-replycode" and stage == b"R":
        conn.sendall(packet(b"y", b"250 ok\0"))
    elif MODE == "long-replycode" and stage == b"R":
        conn.sendall(packet(b"y", b"550 5.7.1 " + b"x" * 2000 + b"\0"))
    elif MODE == "huge-length" and stage == b"R":
        conn.sendall(struct.pack(">I", 0x7FFFFFFF) + b"y")
    elif MODE == "zero-length" and stage == b"R":
        conn.sendall(struct.pack(">I", 0))
    elif MODE == "unknown-reply" and stage == b"R":
        conn.sendall(packet(b"Z"))
    elif MODE == "header-injection" and stage == b"E":
        conn.sendall(packet(b"h", b"X-A\0v\r\nInjected: yes\0") + packet(b"c"))
    elif MODE == "unnegotiated" and stage == b"E":
        conn.sendall(packet(b"q", b"held\0") + packet(b"c"))
    elif MODE == "close-at-rcpt" and stage == b"R":
        conn.close()
        return "closed"
    elif MODE == "unsolicited" and stage == b"R":
        conn.sendall(packet(b"c") + packet(b"c"))
    elif MODE == "trickle" and stage == b"R":
        for octet in packet(b"r"):
            conn.sendall(bytes([octet]))
            time.sleep(0.2)
    else:
        return False
    return True


def serve(MODE, conn):
    with conn:
        while True:
            head = read_exact(conn, 4)
            if head is None:
                return
            (length,) = struct.unpack(">I", head)
            body = read_exact(conn, length)
            if body is None:
                return
            cmd, data = body[:1], body[1:]
            if cmd == b"O":
                if MODE == "bad-optneg":
                    conn.sendall(packet(b"O", struct.pack(">III", 99, 0, 0)))
                    continue
                if MODE == "silent":
                    continue
                actions = 0 if MODE == "unnegotiated" else 0x01
                conn.sendall(packet(b"O", struct.pack(">III", 6, actions, 0)))
                continue
            if cmd == b"Q":
                return
            if cmd[0] not in NEED_REPLY:
                continue  # macros, abort: no reply
            handled = broken_reply(MODE, conn, cmd)
            if handled == "closed":
                return
            if not handled:
                conn.sendall(packet(b"c"))


def listen(mode, path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(mode, conn), daemon=True).start()


def main():
    directory = sys.argv[1]
    threads = []
    for mode in MODES:
        t = threading.Thread(target=listen, args=(mode, os.path.join(directory, mode + ".sock")),
                             daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
