#!/usr/bin/env bash
# Build KVM selftests from build/linux, statically, into build/selftests.
#
#   scripts/build-selftests.sh [TEST...]
#
# TEST is a path below tools/testing/selftests/kvm, e.g. x86_64/xapic_ipi_test.
# Without arguments, the tests listed in tests/kvm-selftests.list are built.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
tree="$top/build/linux"
out="$top/build/selftests/kvm"
hdr="$top/build/headers"
jobs="${JOBS:-$(nproc)}"

[ -d "$tree/tools/testing/selftests/kvm" ] || { echo "error: build/linux is missing; run 'make tree'" >&2; exit 1; }

if [ $# -eq 0 ]; then
	mapfile -t tests < <(sed 's/#.*//; /^\s*$/d' "$top/tests/kvm-selftests.list")
else
	tests=("$@")
fi
[ ${#tests[@]} -gt 0 ] || { echo "selftests: none listed"; exit 0; }

# The selftests compile against the tree's own uapi headers.
echo "selftests: installing uapi headers into build/headers"
make -s -C "$tree" O="$top/build/headers-obj" headers_install \
	INSTALL_HDR_PATH="$hdr" >/dev/null

mkdir -p "$out"
echo "selftests: building ${#tests[@]} KVM selftest(s) statically"
make -s -C "$tree/tools/testing/selftests/kvm" -j"$jobs" \
	OUTPUT="$out" KHDR_INCLUDES="-isystem $hdr/include" \
	EXTRA_CFLAGS=-static LDFLAGS=-static \
	"${tests[@]/#/$out/}" >"$top/build/selftests/build.log" 2>&1 || {
		tail -40 "$top/build/selftests/build.log" >&2
		echo "error: selftest build failed; full log in build/selftests/build.log" >&2
		exit 1
	}
for t in "${tests[@]}"; do
	[ -x "$out/$t" ] || { echo "error: $t was not built" >&2; exit 1; }
done
echo "selftests: ${tests[*]}"
