#!/bin/sh
# Fuzz for longer than CI does: build the libFuzzer targets with clang (ASan and
# UBSan included) in _build/fuzz and run each for FUZZ_SECONDS (default 300),
# one after the other, from its seeds in tests/data and a corpus kept between
# runs in FUZZ_CORPUS (default _build/fuzz-corpus; never tests/data, which holds
# only the hand-picked seeds).  A crash leaves its input in
# FUZZ_CORPUS/TARGET-artifacts/ and is printed in base64; the exit status is
# non-zero if any target crashed.
#
# Usage: contrib/fuzz.sh [TARGET...]     e.g. contrib/fuzz.sh fuzz_conf fuzz_dns_answer
#        FUZZ_SECONDS=3600 contrib/fuzz.sh
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
command -v clang >/dev/null 2>&1 || { echo "fuzz.sh: clang is not installed" >&2; exit 1; }
[ -x "$top/configure" ] || (cd "$top" && ./autogen.sh >/dev/null 2>&1) ||
	{ echo "fuzz.sh: autogen.sh failed" >&2; exit 1; }

dir=$top/_build/fuzz
: "${FUZZ_SECONDS:=300}" "${FUZZ_CORPUS:=$top/_build/fuzz-corpus}"
mkdir -p "$dir" "$FUZZ_CORPUS"
(cd "$dir" && { [ -f Makefile ] || CC=clang "$top/configure" -q --with-fuzzer=clang; } &&
	make -s -j"$(nproc 2>/dev/null || echo 2)") || { echo "fuzz.sh: build failed" >&2; exit 1; }
echo "fuzz.sh: ${FUZZ_SECONDS}s per target, corpus in $FUZZ_CORPUS" >&2
FUZZ_SECONDS=$FUZZ_SECONDS FUZZ_CORPUS=$FUZZ_CORPUS FUZZ_TARGETS="$*" \
	srcdir=$top builddir=$dir bash "$top/tests/fuzz/run-t"
