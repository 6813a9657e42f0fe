# Peers for the relay tests, sourced after tests/tap/libtap.sh: Postfix's
# smtp-sink as a v6-only primary on [::1], dnsmasq with test zones, swaks as
# the sender, and a few waits.  Everything runs on loopback and is stopped
# at exit by libtap's cleanup.

command -v smtp-sink >/dev/null || skip_all "smtp-sink (postfix) is not installed"
command -v swaks >/dev/null || skip_all "swaks is not installed"

SINK_USER=()
[ "$(id -u)" -eq 0 ] && SINK_USER=(-u nobody)
declare -A SINK_PID

# sink_start NAME PORT [SMTP-SINK OPTIONS...]: one file per message in $MX_DIR/NAME/.
# It listens on [::1] (SINK_HOST=127.0.0.2 makes an IPv4-only one).
sink_start() {
	local name=$1 port=$2 host=${SINK_HOST:-::1} listen
	shift 2
	mkdir -p "$MX_DIR/$name"
	chmod 777 "$MX_DIR/$name"
	case $host in *:*) listen="[$host]:$port" ;; *) listen="$host:$port" ;; esac
	smtp-sink "${SINK_USER[@]}" "$@" -d "$MX_DIR/$name/%M." "$listen" 256 \
		>>"$MX_DIR/$name.log" 2>&1 &
	SINK_PID[$name]=$!
	mx_track $!
	wait_port "$host" "$port" 10 || bail "smtp-sink $name did not start on $listen"
}

sink_stop() {
	local pid=${SINK_PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	SINK_PID[$1]=
}

# sink_count NAME [PATTERN]: messages received (holding PATTERN, a fixed string).
sink_count() {
	local dir=$MX_DIR/$1
	[ -d "$dir" ] || { echo 0; return; }
	if [ -n "${2:-}" ]; then
		grep -lF -- "$2" "$dir"/* 2>/dev/null | wc -l
	else
		find "$dir" -type f | wc -l
	fi
}

# wait_count SECONDS NAME N [PATTERN]: until the sink holds at least N (matching) messages.
wait_count() {
	local deadline=$((SECONDS + $1))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(sink_count "$2" "${4:-}")" -ge "$3" ] && return 0
		sleep 0.1
	done
	return 1
}

# sink_file NAME PATTERN: the (first) message holding PATTERN.
sink_file() {
	grep -lF -- "$2" "$MX_DIR/$1"/* 2>/dev/null | head -n 1
}

# send FROM TO[,TO...] TOKEN [SWAKS ARGS...]: one message through our SMTP port; prints the queue id.
send() {
	local from=$1 to=$2 token=$3 out
	shift 3
	out=$(swaks --server 127.0.0.1 --port "$SMTP_PORT" --from "$from" --to "$to" \
		--header "Subject: $token" "$@" 2>&1) || { diag "swaks failed: $(echo "$out" | tail -n 3)"; return 1; }
	printf '%s\n' "$out" | grep -o 'queued as [0-9A-Za-z]*' | tail -n 1 | cut -d' ' -f3
}

# dns_start ARGS...: dnsmasq on 127.0.0.1 with the given records; sets DNS_PORT.
dns_start() {
	local tries=0 n pid
	command -v dnsmasq >/dev/null || skip_all "dnsmasq is not installed"
	while [ $tries -lt 20 ]; do
		tries=$((tries + 1))
		DNS_PORT=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
		dnsmasq --no-daemon --conf-file=/dev/null --port="$DNS_PORT" \
			--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
			--local=/test/ --local-ttl=1 "$@" >"$MX_DIR/dnsmasq.log" 2>&1 &
		pid=$!
		n=0
		while [ $n -lt 50 ]; do
			if grep -q 'started, version' "$MX_DIR/dnsmasq.log" 2>/dev/null; then
				mx_track "$pid"
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
			n=$((n + 1))
		done
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	bail "dnsmasq did not start"
}

# log_wait SECONDS EXTENDED-REGEX: until mxedged's log matches.
log_wait() {
	local deadline=$((SECONDS + $1))
	while [ $SECONDS -lt $deadline ]; do
		grep -Eq -- "$2" "$MX_DIR/mxedged.log" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# queue_size: messages the daemon has queued (from status --json).
queue_size() {
	mx status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue"]["size"])'
}

queue_empty_within() {
	local deadline=$((SECONDS + $1))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(queue_size)" = 0 ] && return 0
		sleep 0.2
	done
	return 1
}

# postfix_start NAME PORT [MAIN.CF LINES...]: a private Postfix instance in $MX_DIR/NAME
# (its own config, queue and log, nothing chrooted) with smtpd on [::1]:PORT.
# Needs root.  Stopped at exit.
postfix_start() {
	local name=$1 port=$2 dir
	shift 2
	[ "$(id -u)" -eq 0 ] || skip_all "a private Postfix instance needs root"
	command -v postfix >/dev/null || skip_all "postfix is not installed"
	dir=$MX_DIR/$name
	mkdir -p "$dir/etc" "$dir/spool" "$dir/data"
	chown postfix "$dir/data"
	cat >"$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $name.test
mydomain = test
myorigin = \$myhostname
mydestination =
inet_interfaces = ::1
inet_protocols = ipv6
mynetworks = [::1]/128
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
CF
	printf '%s\n' "$@" >>"$dir/etc/main.cf"
	cat >"$dir/etc/master.cf" <<CF
[::1]:$port inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
pickup    unix  n       -       n       60      1       pickup
showq     unix  n       -       n       -       -       showq
CF
	# Postfix logs its own start-up errors to syslog only: see $dir/maillog once it runs.
	postfix -c "$dir/etc" start >>"$dir/start.log" 2>&1 ||
		bail "postfix $name did not start (postconf -c $dir/etc -n; check maillog_file)"
	POSTFIX_DIRS+=("$dir/etc")
	wait_port ::1 "$port" 15 || bail "postfix $name does not listen on [::1]:$port"
}

POSTFIX_DIRS=()
postfix_stop_all() {
	local d
	for d in "${POSTFIX_DIRS[@]}"; do
		postfix -c "$d" stop >/dev/null 2>&1
	done
	POSTFIX_DIRS=()
}
# libtap's EXIT trap runs _tap_exit; stop the Postfix instances first.
trap '_relay_rc=$?; postfix_stop_all; (exit $_relay_rc); _tap_exit' EXIT
