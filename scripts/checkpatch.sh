#!/usr/bin/env bash
# Run checkpatch.pl --strict from build/linux on every patch of the series.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cp="$top/build/linux/scripts/checkpatch.pl"
[ -x "$cp" ] || die "build/linux is missing; run 'make tree'"

# checkpatch runs scripts/spdxcheck.py with python3, which needs ply.
export PATH="/usr/bin:$PATH"

bad=0 n=0
for dir in kernel tools-perf; do
	[ -f "$top/$dir/series" ] || continue
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		n=$((n + 1))
		if ! (cd "$top/build/linux" && ./scripts/checkpatch.pl --strict -q \
				--no-summary "$top/$dir/$p"); then
			echo "checkpatch: $dir/$p is not clean" >&2
			bad=1
		fi
	done < "$top/$dir/series"
done
[ $bad = 0 ] && echo "checkpatch: $n patch(es) clean"
exit $bad
