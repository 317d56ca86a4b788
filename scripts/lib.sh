# shellcheck shell=bash disable=SC2034
# Sourced by the build scripts: where things are, how many jobs, which
# compiler (jobs and cc are for the sourcing script), and how to stop with
# an error.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs="${JOBS:-$(nproc)}"
# Build outputs, and the kernel tree in git; the tests point BUILD_DIR at a
# scratch folder.
build="${BUILD_DIR:-$top/build}"
tree="$build/linux"

die() { echo "error: $*" >&2; exit 1; }

# ccache when it is installed.  Hash paths relative to the checkout, so
# that a clone in another folder hits the same cache.
cc=gcc
command -v ccache >/dev/null && cc="ccache gcc"
export CCACHE_BASEDIR="$top"
