#!/usr/bin/python3
"""Time 'perf kvm stat halted' against 'perf kvm stat report --event=vmexit'
on the same recording, with as many events for each (at least a million),
and measure the peak RSS of each, and of 'perf kvm stat halted' on crafted
recordings of 10,000 VMs of 1 vCPU and of one VM with every vCPU id KVM
allows (0 to 16383).

The recording is, where this host has KVM's format files
(/sys/kernel/tracing/events/kvm), synthesized (scripts/perf-synth.py):
1,000,000 kvm:guest_halted events and as many exits (a kvm_entry and a
kvm_exit each), 16 vCPUs of 4 VMs; otherwise (or with --vm) it is made in
the test VM: 'perf kvm stat record -a' around two nested guests doing
port-I/O exits while another guest with HLT passed through halts.  Both
reports run on the host, from build/perf/perf (GH_PERF), several times
each, alternating; the ratio of the median times is the result (goal: 1.0
or less, no slower than the existing class).

    scripts/perf-bench.py [--recording FILE | --vm] [--runs N] [--exits N]
"""

from __future__ import annotations

import argparse
import importlib.util
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
TIME = '/usr/bin/time'
DEST = BUILD / 'perf-bench' / 'perf.data.guest'
SYNTH_DEST = BUILD / 'perf-bench' / 'synth.data.guest'
KVM_FORMATS = Path('/sys/kernel/tracing/events/kvm')


def synth_module():
    spec = importlib.util.spec_from_file_location('perf_synth', TOP / 'scripts' / 'perf-synth.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def synthesize(cycles: int) -> Path:
    synth = synth_module()
    print(f'perf-bench: synthesizing {cycles} kvm:guest_halted events and as many exits',
          flush=True)
    blob = synth.kvm_recording({n: (KVM_FORMATS / n / 'format').read_text()
                                for n in synth.KVM_EVENTS},
                               vms=4, vcpus=4, cycles=cycles // 16, bench=True)
    SYNTH_DEST.parent.mkdir(parents=True, exist_ok=True)
    SYNTH_DEST.write_bytes(blob)
    return SYNTH_DEST


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


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall time in s and peak RSS in KiB of one run.  GNU time measures
    the RSS: a child that Python forks starts with the interpreter's peak
    RSS as its own (exec keeps the larger of the old and new image's)."""
    rss = BUILD / 'perf-bench' / 'rss.txt'
    rss.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res = subprocess.run([TIME, '-f', '%M', '-o', str(rss), '--'] + argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    secs = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f'perf-bench: {" ".join(argv)} failed: '
                         f'{res.stderr.decode(errors="replace")}')
    return secs, int(rss.read_text().split()[-1])


def peak_rss(name: str, records: list[tuple]) -> None:
    synth = synth_module()
    path = BUILD / 'perf-bench' / f'{name}.data'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(synth.recording(records))
    secs, rss = timed([str(PERF), 'kvm', 'stat', 'halted', '-i', str(path), '-x,'])
    print(f'rss_case={name} bytes={path.stat().st_size} seconds={secs:.3f} '
          f'peak_rss_kib={rss}')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--recording', type=Path, help='use this recording (default: record one)')
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--exits', type=int, default=1_000_000,
                    help='exits, and kvm:guest_halted events (synthesized), or port-I/O '
                    'exits by two guests (--vm, 3 events each)')
    ap.add_argument('--vm', action='store_true', help='record in the test VM')
    args = ap.parse_args()

    if args.recording:
        path = args.recording
    elif not args.vm and (KVM_FORMATS / 'kvm_exit' / 'format').exists():
        path = SYNTH_DEST if SYNTH_DEST.exists() else synthesize(args.exits)
    else:
        path = DEST if DEST.exists() else record(args.exits)
    counts = count_events(path)
    total = sum(counts.values())
    print('perf-bench: events ' + ', '.join(f'{k} {v}' for k, v in sorted(counts.items())))
    if total < 1_000_000:
        print(f'perf-bench: only {total} events; want at least 1000000', file=sys.stderr)
        return 1
    # Alternate the two, so that both see the same machine.
    halted, vmexit = [], []
    for _ in range(args.runs):
        halted.append(timed([str(PERF), 'kvm', '-i', str(path), 'stat', 'halted', '--stdio']))
        vmexit.append(timed([str(PERF), 'kvm', '-i', str(path), 'stat', 'report',
                             '--event=vmexit', '--stdio']))
    h, v = statistics.median(t for t, _ in halted), statistics.median(t for t, _ in vmexit)
    print(f'events={total} guest_halted={counts.get("kvm:guest_halted", 0)} '
          f'exits={counts.get("kvm:kvm_exit", 0)} runs={args.runs}')
    print(f'halted_s={h:.3f} vmexit_s={v:.3f} ratio={h / v:.3f}')
    print(f'halted_peak_rss_kib={max(r for _, r in halted)} '
          f'vmexit_peak_rss_kib={max(r for _, r in vmexit)}')

    # Memory on crafted recordings: 10,000 VMs of one vCPU, and one VM with
    # every vCPU id from 0 to 16383.
    t = 1_000_000_000
    many = []
    for i in range(10_000):
        many += [('comm', 10_000 + i, 'vm', 0),
                 ('sample', 10_000 + i, 30_000 + i, 16383, 4_000_000, 1_000_000, 1, t + i)]
    peak_rss('10000vms', many)
    wide = [('comm', 100, 'vm', 0)]
    wide += [('sample', 100, 101 + i, i, 4_000_000, 1_000_000, 1, t + i) for i in range(16384)]
    peak_rss('16384vcpus', wide)
    return 0


if __name__ == '__main__':
    sys.exit(main())
