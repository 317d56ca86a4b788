#!/usr/bin/env bash
# Build tools/perf from build/linux into build/perf, with libtraceevent.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
tree="$top/build/linux"
out="$top/build/perf"
jobs="${JOBS:-$(nproc)}"

[ -d "$tree/tools/perf" ] || { echo "error: build/linux is missing; run 'make tree'" >&2; exit 1; }
mkdir -p "$out"

cc=gcc
command -v ccache >/dev/null && cc="ccache gcc"
# Hash paths relative to the checkout, so that another clone hits the cache.
export CCACHE_BASEDIR="$top"

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
