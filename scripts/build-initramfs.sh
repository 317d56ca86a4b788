#!/usr/bin/env bash
# Build build/initramfs.cpio for the test VM: busybox, perf with its shared
# libraries, the KVM selftests from 'make selftests', the project's guest
# programs (tests/guest/*.c, linked statically) and in-guest scripts
# (tests/vm/).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
b="$top/build"
root="$b/initramfs"
perf="$b/perf/perf"

[ -x "$perf" ] || die "build/perf/perf is missing; run 'make perf'"
# busybox-static installs a static /bin/busybox.
busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox is missing (apt-get install busybox-static)"

rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,lib,lib64,etc,proc,sys,dev,tmp,mnt/host,tests,selftests,root}
cp "$busybox" "$root/bin/busybox"
install -m 755 "$top/scripts/initramfs-init" "$root/init"

# perf and every shared library it loads, at the same paths as here.
strip -o "$root/usr/bin/perf" "$perf"
ldd "$perf" | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}' | sort -u |
while read -r lib; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
	strip --strip-unneeded "$root$lib" 2>/dev/null || true
done

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

echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$b/initramfs.cpio"
echo "initramfs: build/initramfs.cpio ($(du -h "$b/initramfs.cpio" | cut -f1))"
