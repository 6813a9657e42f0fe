#!/bin/sh
# Install what mxedge needs to build and test on Debian 12, and nothing that
# is already there.  Usage: contrib/deps.sh [build|test|bench]...
# (default: build test).  Needs root (or sudo) only when something is missing.
set -eu

build="autoconf automake make gcc pkg-config libevent-dev libgnutls28-dev libunbound-dev
	libsqlite3-dev libspf2-dev libmilter-dev"
test="openssl gnutls-bin curl swaks libnet-ssleay-perl libio-socket-inet6-perl postfix dnsmasq-base bind9-dnsutils python3 iproute2
	clang libclang-rt-dev procps haproxy opendkim"
bench="haproxy nginx libnginx-mod-stream wrk valgrind strace"

want=
[ $# -gt 0 ] || set -- build test
for what in "$@"; do
	case $what in
	build) want="$want $build" ;;
	test) want="$want $test" ;;
	bench) want="$want $bench" ;;
	*) echo "deps.sh: unknown set '$what' (build, test, bench)" >&2; exit 2 ;;
	esac
done

missing=
for p in $want; do
	if ! dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" -eq 0 ]; then
	sudo=
elif command -v sudo >/dev/null 2>&1; then
	sudo=sudo
else
	echo "deps.sh: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi
echo "deps.sh: installing$missing" >&2
# Postfix is a test peer (smtp-sink, smtp-source), not the system's MTA.
echo 'postfix postfix/main_mailer_type select No configuration' | $sudo debconf-set-selections
$sudo apt-get update -q >/dev/null
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
# Packages may start system services that would collide with test ports.
for svc in postfix nginx haproxy dnsmasq dovecot; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q "$svc" 2>/dev/null; then
		$sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
	elif command -v service >/dev/null 2>&1; then
		$sudo service "$svc" stop >/dev/null 2>&1 || true
	fi
done
