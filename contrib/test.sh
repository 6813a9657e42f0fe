#!/bin/sh
# Build mxedge and run the whole test suite twice: a plain build and one with
# AddressSanitizer + UndefinedBehaviorSanitizer; then every libFuzzer target for
# FUZZ_SECONDS (default 10) in a clang build.  Installs missing Debian
# packages first.  Prints "N passed, N failed" at the end; exits non-zero if
# anything failed.  Usage: contrib/test.sh [plain|asan|fuzz]...
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
"$top/contrib/deps.sh" build test || exit 1
[ -x configure ] && [ configure -nt configure.ac ] || ./autogen.sh >/dev/null 2>&1 || {
	echo "autogen.sh failed" >&2; exit 1; }

[ $# -gt 0 ] || set -- plain asan fuzz
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0
status=0
for flavour in "$@"; do
	case $flavour in
	plain) flags= ;;
	asan) flags="--enable-asan --enable-ubsan" ;;
	fuzz)
		# libFuzzer targets, FUZZ_SECONDS each (the suite itself ran in the builds above).
		if ! command -v clang >/dev/null 2>&1; then
			echo "== fuzz: clang not installed, fuzz targets not run" >&2
			continue
		fi
		dir=$top/_build/fuzz
		mkdir -p "$dir"
		echo "== fuzz build in $dir" >&2
		(cd "$dir" && { [ -f Makefile ] || CC=clang "$top/configure" -q --with-fuzzer=clang; } &&
			make -s -j"$jobs") || { echo "build (fuzz) failed" >&2; exit 1; }
		(cd "$dir" && FUZZ_SECONDS=${FUZZ_SECONDS:-10} make -s fuzz-smoke) >"$dir/fuzz.log" 2>&1 ||
			status=1
		cat "$dir/fuzz.log"
		p=$(grep -c '^ok ' "$dir/fuzz.log")
		f=$(grep -c '^not ok ' "$dir/fuzz.log")
		passed=$((passed + p))
		failed=$((failed + f))
		continue
		;;
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
