#!/bin/sh
#
# Regenerate the captured TLS ClientHellos used by tests/unit/front_hello-t.
#
# Each capture is what a real client (gnutls-cli, openssl s_client, curl)
# sends first: a tiny listener on 127.0.0.1 reads TLS records until the
# handshake message they carry is complete, writes exactly those record bytes
# to hello-NAME.bin and hangs up, so the client fails after sending its hello.
# Nothing but loopback is ever contacted.
#
# Usage: tests/data/make-hellos.sh [OUTDIR]    (default: this script's directory)
#
# Needs python3, gnutls-cli (gnutls-bin), openssl and curl.  The captures
# contain random values and key shares, so they differ on every run; the tests
# only rely on their structure (SNI imap.example.test, ALPN where asked for).

set -eu

out=${1:-$(dirname "$0")}
sni=imap.example.test
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

for tool in python3 gnutls-cli openssl curl; do
	command -v "$tool" >/dev/null 2>&1 || { echo "make-hellos: $tool missing" >&2; exit 1; }
done

# The listener: binds an ephemeral port, prints it, accepts one connection and
# keeps whole TLS records until the first handshake message is complete.
cat >"$tmp/listen.py" <<'EOF'
import socket, sys

def recv_exact(c, n):
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise SystemExit("client closed early after %d bytes" % len(data))
        data += chunk
    return data

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(1)
s.settimeout(20)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(20)
raw = b""
hs = b""
while len(hs) < 4 or len(hs) < 4 + int.from_bytes(hs[1:4], "big"):
    hdr = recv_exact(c, 5)
    if hdr[0] != 22:
        raise SystemExit("not a handshake record: %r" % hdr)
    body = recv_exact(c, int.from_bytes(hdr[3:5], "big"))
    raw += hdr + body
    hs += body
with open(sys.argv[1], "wb") as f:
    f.write(raw)
c.close()
EOF

# capture NAME CLIENT-COMMAND...: PORT in the command is replaced by the port.
capture() {
	name=$1
	shift
	rm -f "$tmp/port"
	python3 "$tmp/listen.py" "$tmp/$name.bin" >"$tmp/port" &
	lpid=$!
	i=0
	while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	port=$(cat "$tmp/port")
	cmd=""
	for a in "$@"; do
		cmd="$cmd '$(printf '%s' "$a" | sed "s/PORT/$port/g; s/'/'\\\\''/g")'"
	done
	eval "timeout 10 $cmd" </dev/null >"$tmp/$name.log" 2>&1 || true
	if ! wait $lpid; then
		echo "make-hellos: capture of $name failed" >&2
		cat "$tmp/$name.log" >&2
		exit 1
	fi
	mv "$tmp/$name.bin" "$out/hello-$name.bin"
	echo "hello-$name.bin: $(wc -c <"$out/hello-$name.bin") bytes"
}

capture gnutls gnutls-cli --insecure --sni-hostname "$sni" -p PORT 127.0.0.1
capture gnutls-alpn gnutls-cli --insecure --sni-hostname "$sni" --alpn imap --alpn pop3 \
	-p PORT 127.0.0.1
# A finite-field key share (GnuTLS also adds one X25519 share) plus a long
# ALPN list make a hello larger than one Ethernet segment, as post-quantum
# key shares do (OpenSSL 3.0 and GnuTLS 3.7 have no ML-KEM).
# (GnuTLS sends no ALPN at all when given more than 8 protocols.)
alpn_many=""
for n in 01 02 03 04 05 06 07; do
	alpn_many="$alpn_many --alpn=x-mxedge-test-protocol-$n"
done
# shellcheck disable=SC2086
capture gnutls-large gnutls-cli --insecure --sni-hostname "$sni" \
	--priority 'NORMAL:-GROUP-ALL:+GROUP-FFDHE8192:+GROUP-X25519' --alpn=imap $alpn_many \
	-p PORT 127.0.0.1
capture openssl openssl s_client -connect 127.0.0.1:PORT -servername "$sni"
capture openssl-alpn openssl s_client -connect 127.0.0.1:PORT -servername "$sni" -alpn imap,pop3
capture openssl-nosni openssl s_client -connect 127.0.0.1:PORT -noservername
capture openssl-tls12 openssl s_client -connect 127.0.0.1:PORT -servername "$sni" -tls1_2
# A real client splitting its hello over several TLS records.
capture openssl-split openssl s_client -connect 127.0.0.1:PORT -servername "$sni" \
	-groups ffdhe8192:x25519 -max_send_frag 512
capture curl curl -k -s -m 8 --connect-to "$sni:993:127.0.0.1:PORT" "imaps://$sni/"
