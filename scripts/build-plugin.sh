#!/usr/bin/env bash
# Build events/plugin_kvm_guest_halted.c, the libtraceevent plugin for
# kvm:guest_halted, against Debian's libtraceevent-dev, into
# build/plugins/plugin_kvm_guest_halted.so.  trace-cmd and perf load it
# with TRACEEVENT_PLUGIN_DIR=build/plugins.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out="$build/plugins"
src="$top/events/plugin_kvm_guest_halted.c"

pkg-config --exists libtraceevent ||
	die "libtraceevent-dev is missing (apt-get install libtraceevent-dev pkg-config)"
mkdir -p "$out"
# shellcheck disable=SC2046
gcc -O2 -g -Wall -Wextra -Werror -fPIC -shared $(pkg-config --cflags libtraceevent) \
	-o "$out/plugin_kvm_guest_halted.so" "$src" $(pkg-config --libs libtraceevent)
echo "plugin: build/plugins/plugin_kvm_guest_halted.so"
