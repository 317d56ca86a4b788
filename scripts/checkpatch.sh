#!/usr/bin/env bash
# Run checkpatch.pl --strict from build/linux on every patch of the series.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cp="$top/build/linux/scripts/checkpatch.pl"
[ -x "$cp" ] || die "build/linux is missing; run 'make tree'"

# checkpatch runs scripts/spdxcheck.py with python3, which needs ply.
export PATH="/usr/bin:$PATH"

# perf's shell tests carry their description on line 2, where 'perf test'
# reads it (tools/perf/tests/tests-scripts.c), and the SPDX tag on line 3,
# as every shell test there does; checkpatch wants the tag on line 2.  For
# the patches that add such a test, and for that check only, follow perf.
#
# build/linux is Debian's source tarball imported as one commit, without
# upstream's history: checkpatch cannot find the commits that Fixes: tags
# name there, and says so for every one.  Their form is still checked
# (GIT_COMMIT_ID: 12 or more hex digits and the title in ("...")); the
# titles were checked against upstream by hand.
#
# The series adds no MAINTAINERS entry of its own: every file it adds is
# under a directory that an existing entry covers (KVM X86, SCHEDULER, PROC
# FILESYSTEM, the KVM selftests, PERF TOOLS), which check_owners below
# verifies with get_maintainer.pl.  checkpatch still asks "does
# MAINTAINERS need updating?" for each new file; for those patches, and
# that check only, it is answered there.
extra_ignores() {
	if grep -q '^new file mode' "$1"; then
		echo --ignore=FILE_PATH_CHANGES
	fi
	if grep -q '^Fixes: ' "$1"; then
		echo --ignore=UNKNOWN_COMMIT_ID
	fi
	if grep -q '^+++ b/tools/perf/tests/shell/[^/]*\.sh$' "$1"; then
		echo --ignore=SPDX_LICENSE_TAG
	fi
}

# Each file a patch adds is in an existing MAINTAINERS section other than
# THE REST, the catch-all.
check_owners() {
	local f

	awk '/^diff --git / { f = $4 } /^new file mode/ { sub(/^b\//, "", f); print f }' "$1" |
	while read -r f; do
		# Section names are the unindented lines that are not fields.
		if ! (cd "$top/build/linux" &&
		      ./scripts/get_maintainer.pl --no-git --no-git-fallback \
				--sections -f "$f" 2>/dev/null |
		      grep -v -e '^[A-Z]:' -e '^$' -e '^THE REST$' | grep -q .); then
			echo "checkpatch: $f: no MAINTAINERS entry covers it" >&2
			return 1
		fi
	done
}

bad=0 n=0
for dir in kernel sched tools-perf; do
	[ -f "$top/$dir/series" ] || continue
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		n=$((n + 1))
		mapfile -t ignores < <(extra_ignores "$top/$dir/$p")
		if ! (cd "$top/build/linux" && ./scripts/checkpatch.pl --strict -q \
				--no-summary "${ignores[@]}" "$top/$dir/$p"); then
			echo "checkpatch: $dir/$p is not clean" >&2
			bad=1
		fi
		check_owners "$top/$dir/$p" || bad=1
	done < "$top/$dir/series"
done
[ $bad = 0 ] && echo "checkpatch: $n patch(es) clean"
exit $bad
