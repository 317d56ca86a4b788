#!/usr/bin/env bash
# Write the commits of build/linux on top of the pristine base back out as
# the kernel/, sched/ and tools-perf/ series.
#
# Commits that touch only tools/ (outside tools/testing/) go to tools-perf/,
# all others to kernel/, or to sched/ once past the tag gtime-sched-base
# (which 'make tree' sets where kernel/ ends; move it with 'git tag -f' to
# move the boundary).  Kernel commits must come first, since 'make tree'
# applies kernel/ and sched/ before tools-perf/.  Exporting an unedited tree
# reproduces the series byte for byte.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
series_top="${SERIES_TOP:-$top}"
state="$build/.tree-state"

[ -d "$tree/.git" ] || die "build/linux is not prepared; run 'make tree'"
git -C "$tree" rev-parse -q --verify gtime-base >/dev/null ||
	die "build/linux has no gtime-base tag; re-run 'make tree FORCE=1'"
[ -z "$(git -C "$tree" status --porcelain --untracked-files=no)" ] ||
	die "build/linux has uncommitted changes; commit them first"

# A commit belongs to tools-perf/ when every path it touches is under tools/
# but not under tools/testing/ (KVM selftests are kernel patches), or is
# MAINTAINERS, which a tools patch that adds a file updates as well.
is_tools_commit() {
	local files

	files=$(git -C "$tree" diff-tree --no-commit-id --name-only -r "$1" |
		grep -vx MAINTAINERS)
	[ -n "$files" ] &&
		! grep -qv '^tools/' <<<"$files" &&
		! grep -q '^tools/testing/' <<<"$files"
}

kernel_last=gtime-base
seen_perf=0
while read -r sha subject; do
	if is_tools_commit "$sha"; then
		seen_perf=1
	else
		[ $seen_perf = 0 ] ||
			die "kernel commit '$subject' comes after a tools/perf commit; reorder with 'git rebase -i gtime-base'"
		kernel_last=$sha
	fi
done < <(git -C "$tree" log --reverse --format='%H %s' gtime-base..HEAD)

export_range() {
	local dir="$1" range="$2" tmp
	tmp=$(mktemp -d)
	if [ -n "$(git -C "$tree" rev-list "$range")" ]; then
		git -C "$tree" -c diff.suppressBlankEmpty=true \
			format-patch -q --zero-commit --no-signature \
			--numbered --abbrev=12 -o "$tmp" "$range" >/dev/null
	fi
	mkdir -p "$series_top/$dir"
	# Drop the patches the old series listed, then write the new ones.
	if [ -f "$series_top/$dir/series" ]; then
		sed 's/#.*//; /^\s*$/d' "$series_top/$dir/series" | while read -r p; do
			rm -f "$series_top/$dir/$p"
		done
	fi
	: > "$series_top/$dir/series"
	for p in "$tmp"/*.patch; do
		[ -e "$p" ] || continue
		cp "$p" "$series_top/$dir/"
		basename "$p" >> "$series_top/$dir/series"
	done
	echo "export: $dir/: $(wc -l < "$series_top/$dir/series") patch(es)"
	rm -rf "$tmp"
}

# The scheduler series begins at gtime-sched-base, if that is among the
# kernel commits; otherwise it is empty.
sched_base=$kernel_last
if git -C "$tree" rev-parse -q --verify gtime-sched-base >/dev/null &&
   git -C "$tree" merge-base --is-ancestor gtime-sched-base "$kernel_last" &&
   git -C "$tree" merge-base --is-ancestor gtime-base gtime-sched-base; then
	sched_base=$(git -C "$tree" rev-parse gtime-sched-base)
fi

export_range kernel "gtime-base..$sched_base"
export_range sched "$sched_base..$kernel_last"
export_range tools-perf "$kernel_last..HEAD"

# The tree now holds exactly the exported series: record that, so that
# 'make tree' knows it has nothing to re-apply.
if [ -f "$state" ] && [ "$series_top" = "$top" ]; then
	base_version=$(sed -n 's/^base_version=//p' "$state")
	digest=$(SERIES_TOP="$series_top" "$top/scripts/prepare-tree.sh" --digest)
	cat > "$state" <<STATE
base_version=$base_version
applied_head=$(git -C "$tree" rev-parse HEAD)
applied_digest=$digest
STATE
fi
