#!/usr/bin/env bash
# Build KVM selftests from build/linux, statically, into build/selftests.
#
#   scripts/build-selftests.sh [--all | TEST...]
#
# TEST is a path below tools/testing/selftests/kvm, e.g. x86_64/xapic_ipi_test.
# A TEST x86_64/NAME that bench/kvm/NAME.c provides is one of the project's
# own programs built on the selftests' library (a benchmark, not a kernel
# selftest): it is copied into the tree for the build and removed after.
# Without arguments, the tests listed in tests/kvm-selftests.list are built;
# with --all, every upstream x86_64 test but the perf and stress ones (and not
# the series' own guest_halted_test and guest_halted_nested_test), listed then in
# build/selftests/all.list (the upstream regression suite).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out="$top/build/selftests/kvm"
hdr="$top/build/headers"

[ -d "$tree/tools/testing/selftests/kvm" ] || die "build/linux is missing; run 'make tree'"

mkdir -p "$out"

# Every x86_64 KVM selftest of the tree, less the perf and stress tests
# (long-running benchmarks, not pass/fail checks) and the series' own
# guest_halted_test and guest_halted_nested_test, which have their own
# harness tests.
all_tests() {
	printf 'gh-print-progs:\n\t@echo $(TEST_GEN_PROGS_x86_64)\n' |
		make -s -C "$tree/tools/testing/selftests/kvm" -f Makefile -f - \
			gh-print-progs | tr ' ' '\n' |
		grep -v -e '_perf_test$' -e 'stress' -e '/guest_halted_test$' \
			-e '/guest_halted_nested_test$' |
		sed '/^$/d'
}

if [ "${1:-}" = --all ]; then
	mapfile -t tests < <(all_tests)
	printf '%s\n' "${tests[@]}" > "$top/build/selftests/all.list.tmp"
elif [ $# -eq 0 ]; then
	mapfile -t tests < <(sed 's/#.*//; /^\s*$/d' "$top/tests/kvm-selftests.list")
else
	tests=("$@")
fi
[ ${#tests[@]} -gt 0 ] || { echo "selftests: none listed"; exit 0; }

# The selftests compile against the tree's own uapi headers.
echo "selftests: installing uapi headers into build/headers"
make -s -C "$tree" O="$top/build/headers-obj" headers_install \
	INSTALL_HDR_PATH="$hdr" >/dev/null

copied=()
cleanup() { [ ${#copied[@]} -eq 0 ] || rm -f "${copied[@]}"; }
trap cleanup EXIT
for t in "${tests[@]}"; do
	src="$top/bench/kvm/${t#x86_64/}.c"
	dst="$tree/tools/testing/selftests/kvm/$t.c"
	if [ "${t%%/*}" = x86_64 ] && [ -f "$src" ]; then
		[ ! -e "$dst" ] || die "$t is both bench/kvm/${t#x86_64/}.c and a selftest of the tree"
		cp "$src" "$dst"
		copied+=("$dst")
	fi
done

echo "selftests: building ${#tests[@]} KVM selftest(s) statically"
# The x86_64 programs are the ones asked for: that lets make build the
# project's own as well.
make -s -C "$tree/tools/testing/selftests/kvm" -j"$jobs" \
	OUTPUT="$out" KHDR_INCLUDES="-isystem $hdr/include" \
	EXTRA_CFLAGS=-static LDFLAGS=-static \
	TEST_GEN_PROGS_x86_64="${tests[*]}" \
	"${tests[@]/#/$out/}" >"$top/build/selftests/build.log" 2>&1 || {
		tail -40 "$top/build/selftests/build.log" >&2
		echo "error: selftest build failed; full log in build/selftests/build.log" >&2
		exit 1
	}
for t in "${tests[@]}"; do
	[ -x "$out/$t" ] || { echo "error: $t was not built" >&2; exit 1; }
done
if [ -f "$top/build/selftests/all.list.tmp" ]; then
	mv "$top/build/selftests/all.list.tmp" "$top/build/selftests/all.list"
fi
echo "selftests: ${tests[*]}"
