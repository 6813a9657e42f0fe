# TAP helpers for the integration tests (sourced by bash scripts).
#
# Each test: source this file, call plan N, then checks.  mx_setup makes a
# private directory with a config on free loopback ports, a self-signed
# certificate and empty state/spool directories; mx_start runs mxedged in the
# foreground and waits until its control socket answers; everything started
# is stopped and the directory removed at exit (MX_KEEP=1 keeps it).
#
# MXEDGED_WRAPPER="valgrind ..." runs every mxedged started by mx_start or
# mx_daemon under that command (make check-valgrind): waits grow to allow for
# its slowness, valgrind writes MX_DIR/valgrind.PID.log, and an error or a
# definite leak reported there fails the test at exit.

: "${srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${builddir:=$srcdir}"
: "${MXEDGED:=$builddir/src/mxedged}"
: "${MXEDGE:=$builddir/src/mxedge}"

_tap_n=0
_tap_failed=0
_tap_planned=
MX_PIDS=()

plan() {
	_tap_planned=$1
	echo "1..$1"
}

_tap_result() {	# status desc
	_tap_n=$((_tap_n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $_tap_n - $2"
	else
		echo "not ok $_tap_n - $2"
		_tap_failed=$((_tap_failed + 1))
	fi
	return "$1"
}

# ok DESC COMMAND [ARG...]: passes when the command exits 0.
ok() {
	local desc=$1
	shift
	"$@" >/dev/null 2>&1
	_tap_result $? "$desc"
}

# nok DESC COMMAND [ARG...]: passes when the command exits non-zero.
nok() {
	local desc=$1
	shift
	if "$@" >/dev/null 2>&1; then _tap_result 1 "$desc"; else _tap_result 0 "$desc"; fi
}

# is WANTED SEEN DESC
is() {
	if [ "$1" = "$2" ]; then
		_tap_result 0 "$3"
	else
		_tap_result 1 "$3"
		diag "  wanted: $1"
		diag "    seen: $2"
		return 1
	fi
}

# like STRING EXTENDED-REGEX DESC
like() {
	if printf '%s' "$1" | grep -Eq -- "$2"; then
		_tap_result 0 "$3"
	else
		_tap_result 1 "$3"
		diag "  wanted match: $2"
		diag "          seen: $(printf '%s' "$1" | head -c 600)"
		return 1
	fi
}

unlike() {
	if printf '%s' "$1" | grep -Eq -- "$2"; then
		_tap_result 1 "$3"
		diag "  unwanted match: $2"
		diag "            seen: $(printf '%s' "$1" | head -c 600)"
		return 1
	fi
	_tap_result 0 "$3"
}

diag() { echo "# $*" >&2; }

bail() {
	echo "Bail out! $*"
	if [ -n "${MX_DIR:-}" ] && [ -f "$MX_DIR/mxedged.log" ]; then
		diag "last lines of mxedged.log:"
		tail -n 30 "$MX_DIR/mxedged.log" | sed 's/^/#   /' >&2
	fi
	exit 255
}

skip_all() {
	echo "1..0 # skip $*"
	exit 0
}

_tap_cleanup() {
	local pid
	for pid in "${MX_PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "${MX_PIDS[@]}"; do
		# Give each a moment (valgrind's leak check takes seconds), then insist.
		for _ in $(seq 1 $((${MXEDGED_WRAPPER:+600} + 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null
	done
	_tap_valgrind_check
	if [ -n "${MX_DIR:-}" ] && [ -z "${MX_KEEP:-}" ]; then
		rm -rf "$MX_DIR"
	elif [ -n "${MX_DIR:-}" ]; then
		diag "kept $MX_DIR"
	fi
}

# Under MXEDGED_WRAPPER=valgrind: every error or definite leak in its logs fails the test.
_tap_valgrind_check() {
	local f
	[ -n "${MXEDGED_WRAPPER:-}" ] && [ -n "${MX_DIR:-}" ] || return 0
	for f in "$MX_DIR"/valgrind.*.log; do
		[ -s "$f" ] || continue
		if grep -Eq 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|Invalid (read|write|free)|uninitialised|Mismatched free' "$f"; then
			diag "valgrind found errors in mxedged ($(basename "$f")):"
			grep -E '^==[0-9]+== ' "$f" | head -n 60 | sed 's/^/#   /' >&2
			_tap_failed=$((_tap_failed + 1))
		fi
	done
}

_tap_exit() {
	local rc=$?
	_tap_cleanup
	if [ -n "$_tap_planned" ] && [ "$_tap_planned" -ne "$_tap_n" ]; then
		diag "planned $_tap_planned tests but ran $_tap_n"
		exit 255
	fi
	[ "$_tap_failed" -eq 0 ] || exit 1
	exit $rc
}
trap _tap_exit EXIT
trap 'exit 130' INT TERM

# Remember a background process to stop at exit.
mx_track() { MX_PIDS+=("$1"); }

# A free TCP port on loopback (the kernel picks it; a small race is acceptable).
free_port() {
	python3 -c 'import socket
s = socket.socket(socket.AF_INET6 if "'"${1:-}"'" == "6" else socket.AF_INET)
s.bind(("::1" if "'"${1:-}"'" == "6" else "127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_port HOST PORT [SECONDS]: until something accepts connections there.
wait_port() {
	local host=$1 port=$2 deadline=$((SECONDS + ${3:-10}))
	while [ $SECONDS -lt $deadline ]; do
		if python3 -c 'import socket,sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)' "$host" "$port" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# wait_for SECONDS COMMAND...: poll until the command succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt $deadline ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# mx_cert DIR NAME: a self-signed certificate and key for NAME (and *.NAME).
mx_cert() {
	local dir=$1 name=$2
	mkdir -p "$dir"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=$name" -addext "subjectAltName=DNS:$name,DNS:*.$name" \
		-keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 ||
		bail "cannot generate a certificate with openssl"
}

# mx_setup: private directory, certificate, config.  Sets MX_DIR, MX_CONF, SMTP_PORT.
mx_setup() {
	MX_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mxedge-test.XXXXXX") || bail "mktemp failed"
	chmod 755 "$MX_DIR"
	MX_CONF=$MX_DIR/mxedge.conf
	SMTP_PORT=$(free_port)
	mx_cert "$MX_DIR/tls" mx.test
	cat >"$MX_CONF" <<CONF
# Generated by tests/tap/libtap.sh for $(basename "$0")
hostname mx.test
state_dir $MX_DIR/state
spool_dir $MX_DIR/spool
tls_certificate $MX_DIR/tls/cert.pem
tls_key $MX_DIR/tls/key.pem
log stderr
log_level debug
resolver 127.0.0.1@1
allow_private_targets yes
smtp_listen 127.0.0.1:$SMTP_PORT
CONF
	if [ "$(id -u)" -eq 0 ]; then
		echo "user nobody" >>"$MX_CONF"
	else
		echo "user $(id -un)" >>"$MX_CONF"
	fi
	mkdir -p "$MX_DIR/state"
	chmod 755 "$MX_DIR/state"
	export MXEDGE_CONF=$MX_CONF
	[ -z "${MXEDGED_WRAPPER:-}" ] || diag "mxedged runs under: $MXEDGED_WRAPPER"
}

# mx_conf LINE...: append config lines.
mx_conf() {
	printf '%s\n' "$@" >>"$MX_CONF"
}

# mx CLI ARGS...: the command-line tool with this test's config.
mx() { "$MXEDGE" -c "$MX_CONF" "$@"; }

# mx_daemon [VAR=VALUE...]: run mxedged in the foreground (under $MXEDGED_WRAPPER, if set)
# with these variables in its environment; wait until its control socket answers.
mx_daemon() {
	local wrap=()
	if [ -n "${MXEDGED_WRAPPER:-}" ]; then
		read -r -a wrap <<<"$MXEDGED_WRAPPER"
		case ${wrap[0]} in *valgrind) wrap+=("--log-file=$MX_DIR/valgrind.%p.log") ;; esac
	fi
	env "$@" "${wrap[@]}" "$MXEDGED" -f -c "$MX_CONF" >>"$MX_DIR/mxedged.log" 2>&1 &
	MX_PID=$!
	mx_track "$MX_PID"
	if ! wait_for $((${MXEDGED_WRAPPER:+105} + 15)) mx status; then
		bail "mxedged did not become ready"
	fi
}

# mx_start: run mxedged in the foreground; wait until its control socket answers.
mx_start() { mx_daemon; }

# mx_stop: SIGTERM and wait for the exit (bounded).
mx_stop() {
	[ -n "${MX_PID:-}" ] || return 0
	kill "$MX_PID" 2>/dev/null
	for _ in $(seq 1 $((${MXEDGED_WRAPPER:+500} + 100))); do
		kill -0 "$MX_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$MX_PID" 2>/dev/null
	wait "$MX_PID" 2>/dev/null
	MX_PID=
}

# mx_log: the daemon's log so far.
mx_log() { cat "$MX_DIR/mxedged.log" 2>/dev/null; }
