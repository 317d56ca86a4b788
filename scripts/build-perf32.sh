#!/usr/bin/env bash
# Build a 32-bit (i386, gcc -m32) tools/perf from build/linux into
# build/perf32, for the tests of length checks that only wrap on 32-bit.
# It is a minimal perf: no libelf, libtraceevent or any other library,
# enough for 'perf report --header-only'.
#
# For the sanitizer build of scripts/fuzz-perf-kvm-stat.py --bits 32:
#   PERF32_OUT      where to build (default build/perf32)
#   PERF32_CFLAGS   added to the compiler's flags (EXTRA_CFLAGS)
#   PERF32_LDFLAGS  the linker's flags (LDFLAGS)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out="${PERF32_OUT:-$build/perf32}"
extra=()
[ -n "${PERF32_CFLAGS:-}" ] && extra+=("EXTRA_CFLAGS=$PERF32_CFLAGS")
[ -n "${PERF32_LDFLAGS:-}" ] && extra+=("LDFLAGS=$PERF32_LDFLAGS")

[ -d "$tree/tools/perf" ] || die "build/linux is missing; run 'make tree'"
# gcc-multilib brings the 32-bit libc and libgcc (libc6-dev-i386, lib32gcc).
echo 'int main(void) { return 0; }' |
	gcc -m32 -x c -o /dev/null - 2>/dev/null ||
	die "gcc -m32 cannot link a program; install gcc-multilib (scripts/deps.sh perf32)"
mkdir -p "$out"

echo "perf32: building tools/perf (gcc -m32${PERF32_CFLAGS:+ $PERF32_CFLAGS}) into ${out#"$top"/} with $jobs jobs"
# -m32 goes in CC, so that tools/scripts/Makefile.arch (__LP64__) and the
# feature checks see a 32-bit compiler; ld -r needs to be told too.
# Every library is switched off: Debian 12 has no 32-bit -dev packages
# but libc's without a foreign architecture (dpkg --add-architecture).
make -s -C "$tree/tools/perf" O="$out" CC="$cc -m32" LD="ld -m elf_i386" -j"$jobs" \
	NO_LIBELF=1 NO_LIBTRACEEVENT=1 NO_LIBPYTHON=1 NO_LIBPERL=1 NO_GTK2=1 \
	NO_SLANG=1 NO_LIBUNWIND=1 NO_LIBDW_DWARF_UNWIND=1 NO_LIBNUMA=1 \
	NO_LIBBABELTRACE=1 NO_JVMTI=1 NO_SDT=1 NO_LIBCAP=1 NO_LIBBPF=1 \
	BUILD_BPF_SKEL=0 NO_LIBPFM4=1 NO_LIBCRYPTO=1 NO_LIBLLVM=1 NO_ZLIB=1 \
	NO_LZMA=1 NO_LIBZSTD=1 NO_LIBAUDIT=1 NO_DEMANGLE=1 NO_CAPSTONE=1 \
	NO_LIBDEBUGINFOD=1 NO_JEVENTS=1 WERROR=0 ${extra[@]+"${extra[@]}"} \
	>"$out/build.log" 2>&1 || {
		tail -40 "$out/build.log" >&2
		die "32-bit perf build failed; full log in $out/build.log"
	}
# EI_CLASS, byte 4 of the ELF header: 1 is ELFCLASS32.
[ "$(od -An -tx1 -j4 -N1 "$out/perf" | tr -d ' ')" = 01 ] ||
	die "${out#"$top"/}/perf is not a 32-bit ELF executable"
# A kernel without IA32 emulation refuses to run it (ENOEXEC); the tests
# then run it under qemu-user's qemu-i386, and so does this check.  A
# sanitizer build (make fuzz32) does not run there: it hangs, hence the
# timeout.
if ver=$("$out/perf" version 2>/dev/null); then
	echo "perf32: ${out#"$top"/}/perf ($ver)"
elif ! command -v qemu-i386 >/dev/null; then
	die "this kernel runs no i386 program (no IA32 emulation) and qemu-i386 is missing: install qemu-user (scripts/deps.sh perf32)"
elif ver=$(timeout 120 qemu-i386 "$out/perf" version); then
	echo "perf32: ${out#"$top"/}/perf ($ver, run under qemu-i386: this kernel runs no i386 program)"
else
	die "${out#"$top"/}/perf runs neither on this kernel (no IA32 emulation) nor under qemu-i386"
fi
