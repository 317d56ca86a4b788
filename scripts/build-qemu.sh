#!/usr/bin/env bash
# Build the test QEMU: Debian 12's qemu source package with qemu/series
# applied (a model of APERF/MPERF under TCG; see qemu/README.md), a minimal
# x86_64-softmmu, into build/qemu/qemu-system-x86_64.
#
#   scripts/build-qemu.sh [--force]
#
# The source comes from the archive with 'apt-get source', through a private
# deb-src list under build/qemu-src/ (the machine's apt configuration is not
# touched), and is unpacked with dpkg-source -x, which applies Debian's
# patches (the 7.2.x stable fixes; the plain 7.2.0 orig tarball hangs nested
# HLT-passthrough guests).  The build is skipped when the binary exists and
# its stamp matches the digest of qemu/series, the patches and the package
# version.  ccache is used when it is installed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
src_dir="$build/qemu-src"
out="$build/qemu"
bin="$out/qemu-system-x86_64"
stamp="$out/.stamp"
force=0
# Pinned like the kernel source (DESIGN.md section 4).
QEMU_SOURCE_PIN="${QEMU_SOURCE_PIN:-1:7.2+dfsg-7+deb12u18}"
[ "${1:-}" = --force ] && force=1

# Private apt state: deb-src for the suites the machine's sources use.
apt_opts=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$src_dir/apt"
	-o "Dir::State::Lists=$src_dir/apt/lists" -o Dir::State::status=/var/lib/dpkg/status
	-o "Dir::Cache::archives=$src_dir/apt/archives" -o APT::Sandbox::User=root)

write_sources() {
	mkdir -p "$src_dir/apt/lists/partial" "$src_dir/apt/archives/partial"
	cat > "$src_dir/apt/debian-src.sources" <<SRC
Types: deb-src
URIs: ${QEMU_MIRROR:-http://deb.debian.org/debian}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: ${QEMU_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

# The pinned qemu source version if the archive still has it, else the
# newest of bookworm's, with a warning; from a fresh private index.
source_version() {
	local versions
	write_sources
	apt-get "${apt_opts[@]}" -qq update >"$src_dir/apt-update.log" 2>&1 ||
		die "apt-get update of the private deb-src list failed (log: $src_dir/apt-update.log)"
	versions=$(apt-cache "${apt_opts[@]}" showsrc qemu 2>/dev/null |
		awk '/^Version:/ {print $2}' | sort -uV)
	if [ -z "$versions" ]; then
		grep -E '^(W|E):' "$src_dir/apt-update.log" >&2 || true
		die "no qemu source package for bookworm: could the archive be reached? (apt log: $src_dir/apt-update.log)"
	fi
	if grep -qxF "$QEMU_SOURCE_PIN" <<<"$versions"; then
		echo "$QEMU_SOURCE_PIN"
	else
		echo "warning: qemu=$QEMU_SOURCE_PIN is no longer in the archive;" >&2
		echo "warning: using the newest bookworm qemu source instead" >&2
		tail -1 <<<"$versions"
	fi
}

# The patches named in qemu/series, in order.
patches() { grep -v -e '^#' -e '^$' "$top/qemu/series" || true; }

patch_digest() {
	local p
	for p in $(patches); do
		[ -f "$top/qemu/$p" ] || die "qemu/series names qemu/$p, which is missing"
	done
	{
		cat "$top/qemu/series"
		for p in $(patches); do cat "$top/qemu/$p"; done
	} | sha256sum | cut -d' ' -f1
}

[ -f "$top/qemu/series" ] || die "qemu/series is missing"
mkdir -p "$src_dir" "$out"

# Cheap check first, without the network: a built binary whose stamp names
# the current patches and the pinned version.  (A binary built from the
# newest version because the pin had gone is kept, too: the stamp names the
# pin it was built for.)
patch_digest >/dev/null
digest=$(patch_digest)
if [ $force = 0 ] && [ -x "$bin" ] && [ -f "$stamp" ] &&
		grep -qx "patches=$digest" "$stamp" &&
		grep -qxF "pin=$QEMU_SOURCE_PIN" "$stamp"; then
	echo "qemu: $bin is up to date ($(sed -n 's/^version=//p' "$stamp"))"
	exit 0
fi

version=$(source_version)
dsc_version=${version#*:}
qsrc="$src_dir/qemu-$dsc_version"

# The source tree: Debian's patched source plus ours, unpacked afresh when
# the patches or the package version change.
if [ "$(cat "$qsrc/.gh-prepared" 2>/dev/null)" != "$digest" ]; then
	rm -rf "$qsrc" "$out/obj"
	dl="$src_dir/dl"
	mkdir -p "$dl"
	if [ ! -f "$dl/qemu_$dsc_version.dsc" ]; then
		echo "qemu: fetching the source package qemu=$version"
		(cd "$dl" && apt-get "${apt_opts[@]}" -q --download-only source "qemu=$version") \
			>"$src_dir/apt-source.log" 2>&1 || {
			tail -20 "$src_dir/apt-source.log" >&2
			die "could not fetch the qemu=$version source package (log: build/qemu-src/apt-source.log)"
		}
	fi
	echo "qemu: unpacking with dpkg-source -x (Debian's patches applied)"
	dpkg-source --no-check -x "$dl/qemu_$dsc_version.dsc" "$qsrc" >"$src_dir/dpkg-source.log" 2>&1 || {
		tail -20 "$src_dir/dpkg-source.log" >&2
		die "dpkg-source -x failed (log: build/qemu-src/dpkg-source.log)"
	}
	# dpkg-source leaves a copy of the orig tarball next to the tree.
	[ "$dl" -ef "$src_dir" ] || rm -f "$src_dir"/qemu_*.orig.tar.*
	# Our patches, in series order; a patch that does not apply stops the
	# build, naming it.
	for p in $(patches); do
		echo "qemu: applying qemu/$p"
		patch -d "$qsrc" -p1 --batch --forward < "$top/qemu/$p" >"$src_dir/patch.log" 2>&1 || {
			cat "$src_dir/patch.log" >&2
			die "qemu/$p does not apply to qemu $version"
		}
	done
	echo "$digest" > "$qsrc/.gh-prepared"
fi

# A minimal x86_64-softmmu: TCG (KVM for completeness), virtio-9p for the
# harness's shared folder; no tools, docs or firmware blobs (the stock
# qemu-system-x86 package's firmware is used, see scripts/vmrun.py).
obj="$out/obj"
mkdir -p "$obj"
if [ ! -f "$obj/build.ninja" ]; then
	echo "qemu: configuring"
	(cd "$obj" && "$qsrc/configure" --cc="$cc" --host-cc=gcc \
		--target-list=x86_64-softmmu --without-default-features \
		--enable-tcg --enable-kvm --enable-virtfs --enable-attr --enable-cap-ng --enable-fdt=system \
		--disable-docs --disable-tools --disable-install-blobs \
		--disable-werror) >"$out/configure.log" 2>&1 || {
		tail -30 "$out/configure.log" >&2
		rm -f "$obj/build.ninja"
		die "QEMU configure failed (log: build/qemu/configure.log)"
	}
fi
echo "qemu: building qemu-system-x86_64 with $jobs jobs"
start=$SECONDS
make -C "$obj" -j"$jobs" qemu-system-x86_64 >"$out/build.log" 2>&1 || {
	tail -40 "$out/build.log" >&2
	die "QEMU build failed (log: build/qemu/build.log)"
}
install -m 0755 "$obj/qemu-system-x86_64" "$bin"
"$bin" -cpu help >/dev/null || die "$bin does not run"
"$bin" -device help 2>/dev/null | grep -q virtio-9p-pci ||
	die "$bin was built without virtio-9p"
printf 'version=%s\npin=%s\npatches=%s\n' "$version" "$QEMU_SOURCE_PIN" "$digest" > "$stamp"
echo "qemu: $bin (qemu $version + qemu/series) built in $((SECONDS - start)) s"
