#!/usr/bin/env bash
# Build build/initramfs.cpio for the test VM: busybox, perf with its shared
# libraries, the KVM selftests from 'make selftests', the project's guest
# programs (tests/guest/*.c, linked statically) and in-guest scripts
# (tests/vm/), Debian's trace-cmd with the kvm:guest_halted plugin
# (TRACEEVENT_PLUGIN_DIR=/usr/local/lib/traceevent/plugins), and the perf
# shell test of 'perf kvm stat halted' (/tests/perf-kvm-stat-halted.sh).
#
# PERF, PERF_TREE (where tools/perf/tests/shell is), INITRAMFS_ROOT and
# INITRAMFS override build/perf/perf, build/linux, build/initramfs and
# build/initramfs.cpio, for a second initramfs beside the default one.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
b="$top/build"
root="${INITRAMFS_ROOT:-$b/initramfs}"
perf="${PERF:-$b/perf/perf}"
perf_tree="${PERF_TREE:-$tree}"
cpio_out="${INITRAMFS:-$b/initramfs.cpio}"
plugin="$b/plugins/plugin_kvm_guest_halted.so"

[ -x "$perf" ] || die "build/perf/perf is missing; run 'make perf'"
# busybox-static installs a static /bin/busybox.
busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox is missing (apt-get install busybox-static)"

rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,lib,lib64,etc,proc,sys,dev,tmp,mnt/host,tests,selftests,root}
cp "$busybox" "$root/bin/busybox"
install -m 755 "$top/scripts/initramfs-init" "$root/init"

# perf and trace-cmd, and every shared library they load, at the same paths
# as here.
strip -o "$root/usr/bin/perf" "$perf"
bins=("$perf")
if [ -x /usr/bin/trace-cmd ]; then
	strip -o "$root/usr/bin/trace-cmd" /usr/bin/trace-cmd
	bins+=(/usr/bin/trace-cmd)
fi
for bin in "${bins[@]}"; do
	ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}'
done | sort -u |
while read -r lib; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
	strip --strip-unneeded "$root$lib" 2>/dev/null || true
done

# The kvm:guest_halted plugin ('make plugin'), outside the standard plugin
# path: tests name it with TRACEEVENT_PLUGIN_DIR, as users would.
if [ -f "$plugin" ]; then
	mkdir -p "$root/usr/local/lib/traceevent/plugins"
	cp "$plugin" "$root/usr/local/lib/traceevent/plugins/"
fi

# Guest programs.
mkdir -p "$b/guest"
for src in "$top"/tests/guest/*.c; do
	bin="$b/guest/$(basename "$src" .c)"
	if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
		gcc -O2 -Wall -Wextra -Werror -static -isystem "$b/headers/include" \
			-o "$bin" "$src"
	fi
	cp "$bin" "$root/usr/bin/"
done

# KVM selftests.
if [ -d "$b/selftests/kvm" ]; then
	sed 's/#.*//; /^\s*$/d' "$top/tests/kvm-selftests.list" | while read -r t; do
		[ -x "$b/selftests/kvm/$t" ] && cp "$b/selftests/kvm/$t" "$root/selftests/"
	done
fi

# In-guest scripts.
if compgen -G "$top/tests/vm/*" >/dev/null; then
	install -m 755 "$top"/tests/vm/* "$root/tests/"
fi
shell_test="$perf_tree/tools/perf/tests/shell/kvm_stat_halted.sh"
if [ -f "$shell_test" ]; then
	install -m 755 "$shell_test" "$root/tests/perf-kvm-stat-halted.sh"
fi

echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$cpio_out"
echo "initramfs: ${cpio_out#"$top"/} ($(du -h "$cpio_out" | cut -f1))"
