#!/usr/bin/env bash
# Make sure the Debian packages a target needs are installed.
#
#   scripts/deps.sh GROUP...
#
# Groups: tree, kernel, perf, perf32, vm, test, plot, qemu, all.  As root,
# missing packages are installed with apt-get (one 'apt-get update' per
# run).  Without root, the exact apt-get line is printed and the script
# fails.
set -euo pipefail

# Pinned for reproducible CI; see DESIGN.md section 4.  When this version
# has gone from the archive, the newest 6.12 source is used with a warning.
LINUX_SOURCE_PIN="${LINUX_SOURCE_PIN:-6.12.117-1~deb12u1}"

pkgs_for() {
	case "$1" in
	tree)	echo "git xz-utils" ;;
	kernel)	echo "build-essential flex bison bc libelf-dev libssl-dev cpio ccache rsync" ;;
	# GNU time: perf's own peak RSS (tests, perf-bench).  A child's
	# ru_maxrss from Python includes the forked interpreter's.
	perf)	echo "build-essential flex bison libelf-dev libdw-dev libtraceevent-dev pkg-config time" ;;
	# The 32-bit perf (scripts/build-perf32.sh): gcc -m32 and the i386
	# libc from gcc-multilib, no foreign architecture; its ASan and UBSan
	# runtimes for make fuzz32 (gcc-multilib brings them too); qemu-i386
	# from qemu-user, to run it where the kernel has no IA32 emulation.
	perf32)	echo "build-essential gcc-multilib lib32asan8 lib32ubsan1 flex bison qemu-user" ;;
	vm)	echo "qemu-system-x86 busybox-static cpio trace-cmd" ;;
	test)	echo "python3 python3-pytest python3-ply python3-git" ;;
	plot)	echo "gnuplot-nox" ;;
	# The model QEMU (scripts/build-qemu.sh): Debian's source package and
	# what a minimal x86_64-softmmu with virtio-9p needs; firmware comes
	# from the stock qemu-system-x86 (seabios, ipxe-qemu).
	qemu)	echo "dpkg-dev build-essential patch xz-utils ccache python3 meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev libcap-ng-dev qemu-system-x86" ;;
	all)	for g in tree kernel perf perf32 vm test plot qemu; do pkgs_for "$g"; done ;;
	*)	echo "deps.sh: unknown group '$1'" >&2; exit 2 ;;
	esac
}

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_updated=0
apt_install() {
	if [ "$(id -u)" != 0 ]; then
		echo "error: missing Debian packages. Run as root:" >&2
		echo "  apt-get update && apt-get install -y $*" >&2
		exit 1
	fi
	if [ $apt_updated = 0 ]; then
		echo "deps: apt-get update" >&2
		apt-get update -qq >&2
		apt_updated=1
	fi
	echo "deps: apt-get install -y $*" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "$@" >&2
}

# The kernel source package: pinned version, else the newest 6.12.
ensure_linux_source() {
	[ -f /usr/src/linux-source-6.12.tar.xz ] && return
	if [ "$(id -u)" = 0 ] && [ $apt_updated = 0 ]; then
		echo "deps: apt-get update" >&2
		apt-get update -qq >&2
		apt_updated=1
	fi
	if apt-cache madison linux-source-6.12 2>/dev/null |
			awk '{print $3}' | grep -qxF "$LINUX_SOURCE_PIN"; then
		apt_install "linux-source-6.12=$LINUX_SOURCE_PIN"
	else
		echo "warning: linux-source-6.12=$LINUX_SOURCE_PIN is no longer in the archive;" >&2
		echo "warning: using the newest linux-source-6.12 instead" >&2
		apt_install linux-source-6.12
	fi
	if [ ! -f /usr/src/linux-source-6.12.tar.xz ]; then
		echo "error: /usr/src/linux-source-6.12.tar.xz is missing after installing linux-source-6.12" >&2
		exit 1
	fi
}

want_source=0
missing=()
for group in "$@"; do
	if [ "$group" = source ]; then
		want_source=1
		continue
	fi
	for p in $(pkgs_for "$group"); do
		installed "$p" || missing+=("$p")
	done
done
if [ ${#missing[@]} -gt 0 ]; then
	# Deduplicate while keeping order.
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
	apt_install "${missing[@]}"
fi
if [ $want_source = 1 ]; then
	ensure_linux_source
fi
