#!/usr/bin/env bash
# Build the test kernel from build/linux into build/kernel (O=).
#
#   scripts/build-kernel.sh [--base | --debug | --kcsan]
#
# --base builds the unpatched base (tag gtime-base, checked out as a git
# worktree in build/linux-base) with the same config into build/kernel-base
# and build/bzImage-base, for the upstream regression suite.  Options the
# base's Kconfig does not know (those the series adds) are left out.
# --debug builds the patched tree with kernel/configs/debug/*.config on top
# (lockdep, atomic-sleep checks, KASAN, UBSAN) into build/kernel-debug and
# build/bzImage-debug, for 'make debug-test'.
# --kcsan builds it with kernel/configs/kcsan/*.config on top (KCSAN) into
# build/kernel-kcsan and build/bzImage-kcsan, for 'make kcsan-test'.
#
# The config is 'make tinyconfig' plus kernel/configs/*.config.  Every option
# a fragment sets is checked against the final .config, so a dependency that
# silently turned an option off fails the build instead of the tests.
# Rebuilds are incremental; ccache is used when it is installed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out="$top/build/kernel"
dest="$top/build/bzImage"
base=0

[ -f "$tree/Makefile" ] || die "build/linux is missing; run 'make tree'"

frags=("$top"/kernel/configs/*.config)
if [ "${1:-}" = --debug ]; then
	out="$top/build/kernel-debug"
	dest="$top/build/bzImage-debug"
	frags+=("$top"/kernel/configs/debug/*.config)
fi
if [ "${1:-}" = --kcsan ]; then
	out="$top/build/kernel-kcsan"
	dest="$top/build/bzImage-kcsan"
	frags+=("$top"/kernel/configs/kcsan/*.config)
fi

if [ "${1:-}" = --base ]; then
	base=1
	want=$(git -C "$tree" rev-parse gtime-base)
	tree="$top/build/linux-base"
	out="$top/build/kernel-base"
	dest="$top/build/bzImage-base"
	if [ "$(git -C "$tree" rev-parse HEAD 2>/dev/null)" != "$want" ]; then
		echo "kernel: checking out gtime-base in build/linux-base"
		rm -rf "$tree"
		git -C "$top/build/linux" worktree prune
		git -C "$top/build/linux" worktree add -q -f --detach "$tree" "$want"
	fi
fi
mkdir -p "$out"

kmake() { make -s -C "$tree" O="$out" CC="$cc" HOSTCC="$cc" -j"$jobs" "$@"; }

want=$(cat "${frags[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -f "$out/.config" ] || [ "$(cat "$out/.frag-digest" 2>/dev/null)" != "$want" ]; then
	echo "kernel: configuring (tinyconfig + ${frags[*]##*/})"
	kmake tinyconfig >/dev/null
	(cd "$out" && KCONFIG_CONFIG=.config \
		"$tree/scripts/kconfig/merge_config.sh" -m -O "$out" .config "${frags[@]}" >/dev/null)
	kmake olddefconfig >/dev/null
	echo "$want" > "$out/.frag-digest"
fi

bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=n)
		opt=${line%%=*}
		if grep -q "^$opt=" "$out/.config"; then
			echo "error: $opt is set in .config but the fragment wants it off" >&2
			bad=1
		fi ;;
	CONFIG_*=*)
		if ! grep -qxF "$line" "$out/.config"; then
			opt=${line%%=*}
			if [ $base = 1 ] && ! grep -rqsx --include='Kconfig*' \
					"config ${opt#CONFIG_}" "$tree"; then
				continue
			fi
			have=$(grep -E "^(# )?${line%%=*}[= ]" "$out/.config" || echo "not present")
			echo "error: fragment wants $line, .config has: $have" >&2
			bad=1
		fi ;;
	esac
done < <(cat "${frags[@]}" | grep '^CONFIG_' | tac | awk -F= '!seen[$1]++' | tac)
if [ $bad != 0 ]; then
	rm -f "$out/.frag-digest"
	echo "error: the kernel config fragment does not hold; fix kernel/configs/" >&2
	exit 1
fi

echo "kernel: building bzImage with $jobs jobs"
kmake bzImage
cp "$out/arch/x86/boot/bzImage" "$dest"
echo "kernel: ${dest#"$top"/} ($(git -C "$tree" describe --always --tags 2>/dev/null))"
