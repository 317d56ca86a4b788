#!/usr/bin/env bash
# Build tools/perf from build/linux into build/perf, with libtraceevent.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out="$top/build/perf"

[ -d "$tree/tools/perf" ] || die "build/linux is missing; run 'make tree'"
mkdir -p "$out"


echo "perf: building tools/perf with $jobs jobs"
# Features the harness does not use are switched off: they only add build
# time and shared libraries to the initramfs.
make -s -C "$tree/tools/perf" O="$out" CC="$cc" -j"$jobs" \
	NO_LIBPYTHON=1 NO_LIBPERL=1 NO_GTK2=1 NO_SLANG=1 NO_LIBUNWIND=1 \
	NO_LIBNUMA=1 NO_LIBBABELTRACE=1 NO_JVMTI=1 NO_SDT=1 NO_LIBCAP=1 \
	NO_LIBBPF=1 BUILD_BPF_SKEL=0 NO_LIBPFM4=1 NO_LIBCRYPTO=1 NO_LIBLLVM=1 \
	NO_LIBTRACEEVENT= WERROR=0 >"$out/build.log" 2>&1 || {
		tail -40 "$out/build.log" >&2
		echo "error: perf build failed; full log in build/perf/build.log" >&2
		exit 1
	}
"$out/perf" version --build-options | grep -q 'libtraceevent: \[ on' || {
	echo "error: perf was built without libtraceevent (is libtraceevent-dev installed?)" >&2
	exit 1
}
echo "perf: build/perf/perf ($("$out/perf" version))"
