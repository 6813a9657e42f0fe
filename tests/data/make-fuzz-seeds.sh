#!/bin/sh
#
# Regenerate the fuzz seeds that come from real peers or fixed recipes:
#
#   dns-*.bin    DNS responses from dnsmasq (on 127.0.0.1, test zones only),
#                as tests/fuzz/fuzz_dns_answer reads them: one UDP payload each
#   proxy-*.bin  PROXY protocol v1 and v2 headers (with TLVs and CRC32C) in
#                front of a few bytes of payload, for tests/fuzz/fuzz_proxy_proto
#
# The captures vary only in the DNS message id; the fuzz targets do not rely on
# it.  Nothing but loopback is ever contacted.
#
# Usage: tests/data/make-fuzz-seeds.sh [OUTDIR]   (default: this script's directory)
# Needs python3 and dnsmasq (dnsmasq-base).

set -eu

out=${1:-$(dirname "$0")}
tmp=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM

for tool in python3 dnsmasq; do
	command -v "$tool" >/dev/null 2>&1 || { echo "make-fuzz-seeds: $tool missing" >&2; exit 1; }
done

port=$(python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
dnsmasq --no-daemon --conf-file=/dev/null --port="$port" --listen-address=127.0.0.1 \
	--bind-interfaces --no-resolv --no-hosts --local=/test/ --local-ttl=60 \
	--mx-host=mxr.test,primary.mxr.test,10 --mx-host=mxr.test,mx2.edge.test,20 \
	--mx-host=mxr.test,backup.mxr.test,30 \
	--host-record=primary.mxr.test,::1 --host-record=primary.mxr.test,192.0.2.1 \
	--host-record=mx2.edge.test,2001:db8::2 \
	--cname=alias.mxr.test,primary.mxr.test \
	--mx-host=nullmx.test,.,0 --txt-record=spf-fail.test,"v=spf1 -all" \
	--txt-record=long.test,"v=spf1 ip6:2001:db8::/32 include:_spf.example.test ~all","second string" \
	>"$tmp/dnsmasq.log" 2>&1 &
pid=$!
n=0
until grep -q 'started, version' "$tmp/dnsmasq.log" 2>/dev/null; do
	n=$((n + 1))
	[ $n -lt 50 ] || { cat "$tmp/dnsmasq.log" >&2; exit 1; }
	sleep 0.1
done

python3 - "$port" "$out" <<'EOF'
import os, socket, struct, sys, zlib

port, out = int(sys.argv[1]), sys.argv[2]

def query(name, qtype):
    q = struct.pack(">HHHHHH", 0x4d58, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, ("127.0.0.1", port))
    return s.recv(4096)

for fname, name, qtype in [
        ("dns-mx.bin", "mxr.test", 15),
        ("dns-aaaa.bin", "primary.mxr.test", 28),
        ("dns-a.bin", "primary.mxr.test", 1),
        ("dns-cname.bin", "alias.mxr.test", 28),
        ("dns-nullmx.bin", "nullmx.test", 15),
        ("dns-txt.bin", "long.test", 16),
        ("dns-nxdomain.bin", "nothing.mxr.test", 15),
        ("dns-nodata.bin", "spf-fail.test", 28)]:
    with open(os.path.join(out, fname), "wb") as f:
        f.write(query(name, qtype))

# PROXY headers: v1 for TCP4/TCP6/UNKNOWN, v2 for IPv4 and IPv6 with the TLVs
# the front writes (ALPN 0x01, AUTHORITY 0x02, CRC32C 0x03) and LOCAL.
def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff

SIG = b"\r\n\r\n\0\r\nQUIT\n"

def v2(cmd, fam, addrs, tlvs, crc=False):
    body = addrs + b"".join(struct.pack(">BH", t, len(v)) + v for t, v in tlvs)
    if crc:
        body += struct.pack(">BH", 3, 4) + b"\0\0\0\0"
    hdr = SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body
    if crc:
        hdr = hdr[:-4] + struct.pack(">I", crc32c(hdr))
    return hdr

v4 = socket.inet_pton(socket.AF_INET, "192.0.2.7") + socket.inet_pton(socket.AF_INET, "198.51.100.1") + \
    struct.pack(">HH", 51234, 993)
v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + \
    struct.pack(">HH", 51234, 465)
hello = b"\x16\x03\x01\x00\x05hello"
seeds = {
    "proxy-v1-tcp4.bin": b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 993\r\n" + hello,
    "proxy-v1-tcp6.bin": b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 465\r\n" + hello,
    "proxy-v1-unknown.bin": b"PROXY UNKNOWN\r\n" + hello,
    "proxy-v2-tcp4.bin": v2(1, 0x11, v4, [(2, b"imap.example.test")]) + hello,
    "proxy-v2-tcp6-tlvs.bin": v2(1, 0x21, v6, [(1, b"imap"), (2, b"imap.example.test")], crc=True) + hello,
    "proxy-v2-local.bin": v2(0, 0x00, b"", []) + hello,
}
for fname, data in seeds.items():
    with open(os.path.join(out, fname), "wb") as f:
        f.write(data)
EOF
ls -l "$out"/dns-*.bin "$out"/proxy-*.bin | awk '{print $5, $NF}'
