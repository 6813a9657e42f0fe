#!/bin/sh
# Build mxedge and run the whole test suite twice: a plain build and one with
# AddressSanitizer + UndefinedBehaviorSanitizer.  Installs missing Debian
# packages first.  Prints "N passed, N failed" at the end; exits non-zero if
# anything failed.  Usage: contrib/test.sh [plain|asan]...
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
"$top/contrib/deps.sh" build test || exit 1
[ -x configure ] && [ configure -nt configure.ac ] || ./autogen.sh >/dev/null 2>&1 || {
	echo "autogen.sh failed" >&2; exit 1; }

[ $# -gt 0 ] || set -- plain asan
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0
status=0
for flavour in "$@"; do
	case $flavour in
	plain) flags= ;;
	asan) flags="--enable-asan --enable-ubsan" ;;
	*) echo "test.sh: unknown flavour '$flavour'" >&2; exit 2 ;;
	esac
	dir=$top/_build/$flavour
	mkdir -p "$dir"
	echo "== $flavour build in $dir" >&2
	# shellcheck disable=SC2086
	(cd "$dir" && { [ -f Makefile ] || "$top/configure" -q $flags; } && make -s -j"$jobs") ||
		{ echo "build ($flavour) failed" >&2; exit 1; }
	(cd "$dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 make -s -j"$jobs" check) || status=1
	log=$dir/test-suite.log
	p=$(sed -n 's/^# PASS: *//p' "$log")
	f=0
	for k in FAIL ERROR XPASS; do
		n=$(sed -n "s/^# $k: *//p" "$log")
		f=$((f + ${n:-0}))
	done
	[ "$f" -eq 0 ] || sed -n '/^\(FAIL\|ERROR\)/p' "$dir"/tests/*/*.log >&2
	passed=$((passed + ${p:-0}))
	failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
