#!/usr/bin/env bash
# Prepare build/linux: the pristine 6.12 base as one commit, then the
# project's kernel/ (guest halted-time accounting), sched/ (the scheduler's
# use of it, on top) and tools-perf/ series applied with 'git am'.  The tag
# gtime-sched-base marks the end of kernel/, where a non-empty sched/
# begins.
#
#   scripts/prepare-tree.sh [--force]
#
# Environment:
#   KSRC   an existing Linux 6.12.y tree to use instead of Debian's
#          /usr/src/linux-source-6.12.tar.xz.  It is copied, never modified.
#   TARBALL  the source tarball (default /usr/src/linux-source-6.12.tar.xz).
#   BUILD_DIR, SERIES_TOP  where build/ and the kernel/, sched/, tools-perf/ series
#          live (default: this checkout); the harness tests use them.
#
# A tree that already holds the current series is left alone.  A tree with
# commits or edits that have not been exported is never thrown away: the
# script stops and says so, unless --force is given.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
series_top="${SERIES_TOP:-$top}"
state="$build/.tree-state"
tarball="${TARBALL:-/usr/src/linux-source-6.12.tar.xz}"
force=0
case "${1:-}" in
--force) force=1 ;;
--digest) print_digest=1 ;;
esac

series_digest() {
	local d p
	for d in kernel sched tools-perf; do
		[ -f "$series_top/$d/series" ] || continue
		cat "$series_top/$d/series"
		while read -r p; do
			case "$p" in ''|'#'*) continue ;; esac
			cat "$series_top/$d/$p" 2>/dev/null || echo "missing $d/$p"
		done < "$series_top/$d/series"
	done | sha256sum | cut -d' ' -f1
}

# Check that $1 is a Linux 6.12 tree; print its version.
check_612() {
	local mk="$1/Makefile" v p s
	[ -f "$mk" ] || die "$1 is not a Linux source tree (no Makefile)"
	v=$(sed -n 's/^VERSION = //p' "$mk" | head -1)
	p=$(sed -n 's/^PATCHLEVEL = //p' "$mk" | head -1)
	s=$(sed -n 's/^SUBLEVEL = //p' "$mk" | head -1)
	[ -n "$v" ] && [ -d "$1/arch/x86/kvm" ] ||
		die "$1 is not a Linux source tree (no VERSION or arch/x86/kvm)"
	[ "$v.$p" = 6.12 ] ||
		die "$1 is Linux $v.$p.$s; this series is for Linux 6.12.y"
	echo "$v.$p.$s"
}

digest=$(series_digest)
if [ "${print_digest:-0}" = 1 ]; then
	echo "$digest"
	exit 0
fi

if [ -d "$tree/.git" ] && [ -f "$state" ]; then
	# shellcheck disable=SC1090
	. "$state"
	head=$(git -C "$tree" rev-parse HEAD)
	dirty=$(git -C "$tree" status --porcelain)
	if [ "$force" = 0 ] && [ "$applied_digest" = "$digest" ]; then
		echo "tree: build/linux already holds the current series (base $base_version)"
		exit 0
	fi
	if [ "$force" = 0 ] && { [ "$head" != "$applied_head" ] || [ -n "$dirty" ]; }; then
		cat >&2 <<MSG
error: build/linux has work that is not in kernel/, sched/ or tools-perf/:
$(git -C "$tree" log --oneline "$applied_head..HEAD" 2>/dev/null | sed 's/^/  commit /')
$(echo "$dirty" | sed '/^$/d; s/^/  edited /')
Export it first with 'make export-series', or throw it away with
'make tree FORCE=1'.
MSG
		exit 1
	fi
	echo "tree: series changed; re-applying on the base commit"
	git -C "$tree" am --abort >/dev/null 2>&1 || true
	git -C "$tree" reset -q --hard gtime-base
	git -C "$tree" clean -qfd
else
	rm -rf "$tree" "$state"
	mkdir -p "$tree"
	if [ -n "${KSRC:-}" ]; then
		[ -d "$KSRC" ] || die "KSRC=$KSRC is not a directory"
		base_version=$(check_612 "$KSRC")
		echo "tree: copying KSRC=$KSRC (Linux $base_version)"
		if git -C "$KSRC" rev-parse --show-toplevel 2>/dev/null |
				grep -qxF "$(cd "$KSRC" && pwd -P)"; then
			git -C "$KSRC" archive --format=tar HEAD | tar -x -C "$tree"
		else
			tar -C "$KSRC" --exclude=.git -cf - . | tar -x -C "$tree"
			if [ -f "$tree/.config" ] || [ -d "$tree/include/generated" ]; then
				echo "tree: KSRC has in-tree build outputs; cleaning the copy"
				make -s -C "$tree" mrproper
			fi
		fi
		origin="KSRC=$KSRC"
	else
		[ -f "$tarball" ] || die "$tarball is missing. Install it with
  apt-get install linux-source-6.12
or point KSRC at a Linux 6.12.y tree."
		echo "tree: extracting $tarball"
		tar -xJf "$tarball" -C "$tree" --strip-components=1 ||
			die "cannot extract $tarball"
		base_version=$(check_612 "$tree")
		origin="$(basename "$tarball") ($(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || echo unknown))"
	fi
	base_version=$(check_612 "$tree")
	echo "tree: committing the pristine base (Linux $base_version)"
	git -C "$tree" init -q -b gtime
	git -C "$tree" config user.name "${GIT_AUTHOR_NAME:-gtime-halted}"
	git -C "$tree" config user.email "${GIT_AUTHOR_EMAIL:-gtime-halted@localhost}"
	git -C "$tree" config core.abbrev 12
	git -C "$tree" add -A -f .
	GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z" \
		git -C "$tree" commit -q -m "Linux $base_version base from $origin"
	# Debian's source ignores every top-level path (its packaging repo
	# tracks only debian/), which would hide new files from 'git add'.
	if grep -qx '!/debian/' "$tree/.gitignore" 2>/dev/null; then
		sed -i '/^# Debian packaging: ignore everything/,/^!\/debian\/$/d' "$tree/.gitignore"
		GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z" \
			git -C "$tree" commit -q -am "Drop the Debian packaging rule that hides new top-level paths from git"
	fi
	git -C "$tree" tag -f gtime-base >/dev/null
fi

apply_series() {
	local dir="$1" n=0 p
	[ -f "$series_top/$dir/series" ] || return 0
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		[ -f "$series_top/$dir/$p" ] || die "$dir/series names $p, which does not exist"
		if ! git -C "$tree" am -q "$series_top/$dir/$p" >"$build/am.err" 2>&1; then
			echo "error: $dir/$p does not apply to build/linux:" >&2
			sed 's/^/  /' "$build/am.err" >&2
			git -C "$tree" am --abort >/dev/null 2>&1 || true
			# Show the hunks that do not apply, then leave the tree as it was.
			git -C "$tree" apply --reject "$series_top/$dir/$p" >/dev/null 2>&1 || true
			git -C "$tree" ls-files --others --exclude-standard -z |
			while IFS= read -r -d '' r; do
				case "$r" in *.rej) ;; *) continue ;; esac
				echo "  rejected hunk(s) for $r:" >&2
				sed 's/^/    /' "$tree/$r" >&2
			done
			git -C "$tree" reset -q --hard
			git -C "$tree" clean -qfd
			rm -f "$state"
			exit 1
		fi
		n=$((n + 1))
	done < "$series_top/$dir/series"
	echo "tree: applied $n patch(es) from $dir/"
}

apply_series kernel
if [ -n "$(sed 's/#.*//; /^\s*$/d' "$series_top/sched/series" 2>/dev/null)" ]; then
	git -C "$tree" tag -f gtime-sched-base >/dev/null
else
	git -C "$tree" tag -d gtime-sched-base >/dev/null 2>&1 || true
fi
apply_series sched
apply_series tools-perf

cat > "$state" <<STATE
base_version=$base_version
applied_head=$(git -C "$tree" rev-parse HEAD)
applied_digest=$digest
STATE
echo "tree: build/linux ready (Linux $base_version + series)"
