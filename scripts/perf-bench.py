#!/usr/bin/python3
"""Time 'perf kvm stat halted' against 'perf kvm stat report --event=vmexit'
on the same recording of at least a million events.

The recording is made in the test VM: 'perf kvm stat record -a' around
two nested guests doing port-I/O exits (kvm_entry, kvm_exit and kvm_pio events)
while another guest with HLT passed through halts (kvm:guest_halted
events), with accounting on.  Both reports then run on the host, from
build/perf/perf, several times each; the ratio of the median times is the
result (goal: 1.0 or less, no slower than the existing class).

    scripts/perf-bench.py [--recording FILE] [--runs N] [--exits N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BUILD = TOP / 'build'
sys.path.insert(0, str(TOP / 'scripts'))

import vmrun  # noqa: E402

PERF = Path(os.environ.get('GH_PERF', BUILD / 'perf' / 'perf'))
DEST = BUILD / 'perf-bench' / 'perf.data.guest'


def record(exits: int) -> Path:
    half = exits // 2
    cmd = ('echo 1 > /sys/module/kvm/parameters/guest_halted && '
           '(gh-vmm halt 900 > /dev/null &) && sleep 1 && '
           'perf kvm -o bench.data stat record -a -- sh -c '
           f'"gh-vmm exits {half} passthrough & gh-vmm exits {half} passthrough; wait" '
           '> /dev/null')
    print(f'perf-bench: recording {exits} exits in the VM', flush=True)
    res = vmrun.VM().run(cmd, timeout=1500)
    if res.rc != 0 or not (res.share / 'bench.data').exists():
        raise SystemExit(f'perf-bench: recording failed:\n{res.describe()}')
    DEST.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(res.share / 'bench.data', DEST)
    shutil.rmtree(res.share, ignore_errors=True)
    return DEST


def count_events(path: Path) -> dict[str, int]:
    res = subprocess.run([str(PERF), 'script', '-i', str(path), '-F', 'event'],
                         capture_output=True, text=True, timeout=1200)
    counts: dict[str, int] = {}
    for line in res.stdout.splitlines():
        ev = line.strip().rstrip(':')
        counts[ev] = counts.get(ev, 0) + 1
    return counts


def timed(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, timeout=1200)
        times.append(time.perf_counter() - start)
        if res.returncode != 0:
            raise SystemExit(f'perf-bench: {" ".join(argv)} failed: {res.stderr}')
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--recording', type=Path, help='use this recording (default: record one)')
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--exits', type=int, default=360000,
                    help='port-I/O exits, by two guests (3 events each)')
    args = ap.parse_args()

    path = args.recording or (DEST if DEST.exists() else record(args.exits))
    counts = count_events(path)
    total = sum(counts.values())
    print('perf-bench: events ' + ', '.join(f'{k} {v}' for k, v in sorted(counts.items())))
    if total < 1_000_000:
        print(f'perf-bench: only {total} events; want at least 1000000', file=sys.stderr)
        return 1
    # Alternate the two, so that both see the same machine.
    halted, vmexit = [], []
    for _ in range(args.runs):
        halted += timed([str(PERF), 'kvm', '-i', str(path), 'stat', 'halted', '--stdio'], 1)
        vmexit += timed([str(PERF), 'kvm', '-i', str(path), 'stat', 'report',
                         '--event=vmexit', '--stdio'], 1)
    h, v = statistics.median(halted), statistics.median(vmexit)
    print(f'events={total} guest_halted={counts.get("kvm:guest_halted", 0)} runs={args.runs}')
    print(f'halted_s={h:.3f} vmexit_s={v:.3f} ratio={h / v:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
