#!/usr/bin/env bash
# Check that every patch of the series builds on its own: for each commit
# after gtime-base, check it out in a worktree (build/linux-bisect) and build
# the test kernel's vmlinux there (O=build/kernel-bisect, same config);
# then the head with KVM and KUnit as modules, and without
# FAIR_GROUP_SCHED, NO_HZ_FULL, KVM, SCHED_GUEST_HALTED or CFS_BANDWIDTH.
# Incremental and ccache-backed, but still one kernel build per patch that
# touches a widely included header: a maintainer's check, not part of
# 'make test'.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
wt="$top/build/linux-bisect"
out="$top/build/kernel-bisect"

[ -f "$top/build/kernel/.config" ] || die "run 'make kernel' first"

if [ ! -d "$wt" ]; then
	git -C "$tree" worktree prune
	git -C "$tree" worktree add -q -f --detach "$wt" gtime-base
fi
mkdir -p "$out"

bad=0
for c in $(git -C "$tree" rev-list --reverse gtime-base..HEAD); do
	subject=$(git -C "$tree" log -1 --format=%s "$c")
	git -C "$wt" checkout -q --detach "$c"
	# The test kernel's config afresh each time: olddefconfig at an early
	# commit drops the options later patches add (their KUnit tests, say).
	cp "$top/build/kernel/.config" "$out/.config"
	start=$(date +%s)
	if make -s -C "$wt" O="$out" CC="$cc" HOSTCC="$cc" -j"$jobs" olddefconfig vmlinux \
			>"$out/build.log" 2>&1; then
		echo "ok   $(( $(date +%s) - start ))s  $subject"
	else
		echo "FAIL $(( $(date +%s) - start ))s  $subject"
		tail -20 "$out/build.log" | sed 's/^/     /'
		bad=1
	fi
done

# The series' head once more with KVM built in and KUnit a module, and with
# both as modules: the KVM KUnit tests must not make vmlinux link against
# kunit.ko, and kvm.ko must link with the exports the series adds.
for kvm in y m; do
	cp "$top/build/kernel/.config" "$out/.config"
	"$tree/scripts/config" --file "$out/.config" --enable MODULES \
		--set-val KVM "$kvm" --set-val KVM_AMD "$kvm" --set-val KVM_INTEL "$kvm" \
		--set-val KUNIT m
	start=$(date +%s)
	if make -s -C "$wt" O="$out" CC="$cc" HOSTCC="$cc" -j"$jobs" olddefconfig vmlinux modules \
			>"$out/build.log" 2>&1; then
		echo "ok   $(( $(date +%s) - start ))s  series head with KVM=$kvm KUNIT=m"
	else
		echo "FAIL $(( $(date +%s) - start ))s  series head with KVM=$kvm KUNIT=m"
		tail -20 "$out/build.log" | sed 's/^/     /'
		bad=1
	fi
done
# The series' head without the options its code depends on, one at a time:
# task groups, nohz_full (and with it vtime), KVM itself, the scheduler
# series' own option and CFS bandwidth.
for opt in FAIR_GROUP_SCHED NO_HZ_FULL KVM SCHED_GUEST_HALTED CFS_BANDWIDTH; do
	cp "$top/build/kernel/.config" "$out/.config"
	"$tree/scripts/config" --file "$out/.config" --disable "$opt"
	start=$(date +%s)
	if make -s -C "$wt" O="$out" CC="$cc" HOSTCC="$cc" -j"$jobs" olddefconfig vmlinux \
			>"$out/build.log" 2>&1 &&
			! grep -q "^CONFIG_$opt=y" "$out/.config"; then
		echo "ok   $(( $(date +%s) - start ))s  series head without $opt"
	else
		echo "FAIL $(( $(date +%s) - start ))s  series head without $opt"
		tail -20 "$out/build.log" | sed 's/^/     /'
		bad=1
	fi
done
exit $bad
