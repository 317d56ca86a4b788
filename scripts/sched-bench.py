#!/usr/bin/python3
"""make bench: the scheduler's cost of kernel.sched_guest_halted, on against off.

One boot of the test VM.  `perf bench sched messaging` (groups of
processes passing messages over pipes: wakeups, wakeup placement and load
balancing all the time), then a waker/wakee pair (gh-wake, a wake-up every
2 ms for 2 s), run ROUNDS times with the switch off, on, and off again,
interleaved so that drift hits all alike, in four phases:

  no guest   what the switch costs where there is no halted time: the
             enqueue, dequeue and tick hooks and the balancer's readers
             run, and find no halted vCPU (the cost floor)
  0%         a nested guest, HLT passed through, on CPU 1, busy 99% of
             every 10 ms (gh-vmm duty): nearly nothing to take off
  50%        the same guest busy half of every 10 ms
  100%       a nested guest that only halts: its vCPU is listed, its
             halted load is taken off CPU 1's load, and the balancer moves
             work there, so the workload also gains the CPU time the guest
             leaves free

The result of each phase is the ratio of the median run times, on against
off, and the wakee's p50 and p99 latency; the ratio of the two "off" runs
is the noise floor.  Under QEMU TCG the floor is several percent: the
figures bound the cost, they do not resolve a cost below the floor.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmrun  # noqa: E402

SWITCH = '/proc/sys/kernel/sched_guest_halted'
PARAM = '/sys/module/kvm/parameters/guest_halted'

GUEST_SCRIPT = '''
[ -w {switch} ] || {{ echo "@@error {switch} is missing: not a patched kernel"; exit 1; }}
echo 1 > {param}
saved=$(cat {switch})
perf bench sched messaging -g {groups} -l {loops} > /dev/null	# warm-up
vmm=
for phase in noguest busy half halting; do
	kill $vmm 2>/dev/null
	wait
	case $phase in
	busy) gh-vmm duty {halt_s} 10000 99 1 1 > /dev/null & ;;
	half) gh-vmm duty {halt_s} 10000 50 1 1 > /dev/null & ;;
	halting) taskset -c 1 gh-vmm halt {halt_s} > /dev/null & ;;
	esac
	[ $phase = noguest ] || {{ vmm=$!; sleep 1; }}
	for r in $(seq {rounds}); do
		for mode in off on off2; do
			if [ $mode = on ]; then echo 1 > {switch}; else echo 0 > {switch}; fi
			sleep 0.2
			t=$(perf bench sched messaging -g {groups} -l {loops} |
				sed -n 's/^ *Total time: *\\([0-9.]*\\) .*/\\1/p')
			w=$(gh-wake 2 | grep -E '^p(50|99)_us=' | tr '\\n' ' ')
			echo "run phase=$phase round=$r mode=$mode switch=$(cat {switch}) seconds=$t $w"
		done
	done
done
echo 1 > {switch}
sleep 0.5
awk '/^cpu#/ {{ cpu = $1; sub(",", "", cpu) }} /^ *\\.halted_load / {{ print "signal " cpu " " $3 }}' \\
	/sys/kernel/debug/sched/debug
echo "$saved" > {switch}
kill $vmm 2>/dev/null
wait
echo 0 > {param}
'''

RUN_RE = re.compile(r'^run phase=(\w+) round=(\d+) mode=(\w+) switch=(\d) seconds=([\d.]+) '
                    r'p50_us=([\d.]+) p99_us=([\d.]+)\s*$', re.M)
PHASES = {'noguest': 'no guest (the cost floor)',
          'busy': 'a nested guest on CPU 1, 0% halted (busy 99% of every 10 ms)',
          'half': 'a nested guest on CPU 1, 50% halted',
          'halting': 'a nested guest on CPU 1, 100% halted'}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', '-r', type=int, default=5,
                    help='rounds of off, on, off runs per phase (default 5)')
    ap.add_argument('--groups', '-g', type=int, default=4,
                    help='perf bench sched messaging groups (default 4)')
    ap.add_argument('--loops', '-l', type=int, default=50,
                    help='perf bench sched messaging loops (default 50)')
    args = ap.parse_args()

    budget = 120 + 4 * args.rounds * 3 * 30
    script = GUEST_SCRIPT.format(switch=SWITCH, param=PARAM, groups=args.groups,
                                 loops=args.loops, rounds=args.rounds,
                                 halt_s=budget)
    print(f'sched-bench: {args.rounds} x (off, on, off) runs of perf bench sched messaging '
          f'-g {args.groups} -l {args.loops} and a wake-up pair, with no guest and beside '
          'a guest 0, 50 and 100% halted, one boot...')
    res = vmrun.run_or_report('sched-bench', script, timeout=budget + 120)
    if res is None:
        return 1
    times = {ph: {'off': [], 'on': [], 'off2': []} for ph in PHASES}
    wakes = {ph: {'off': [], 'on': [], 'off2': []} for ph in PHASES}
    for phase, _, mode, sw, secs, p50, p99 in RUN_RE.findall(res.output):
        if sw != ('1' if mode == 'on' else '0'):
            print(f'sched-bench: the switch did not take ({mode}: {sw})', file=sys.stderr)
            return 1
        times[phase][mode].append(float(secs))
        wakes[phase][mode].append((float(p50), float(p99)))
    if any(len(v) != args.rounds for ph in times.values() for v in ph.values()):
        print(f'sched-bench: runs missing or unreadable:\n{res.output}', file=sys.stderr)
        return 1

    for phase, label in PHASES.items():
        print(f'{label}:')
        for mode, xs in times[phase].items():
            ws = wakes[phase][mode]
            print(f'  {mode:<4} median {statistics.median(xs):.3f} s  '
                  f'(runs: {", ".join(f"{x:.3f}" for x in xs)});  wake-up p50 '
                  f'{statistics.median(w[0] for w in ws):.0f} us, p99 '
                  f'{statistics.median(w[1] for w in ws):.0f} us')
        off = statistics.median(times[phase]['off'])
        print(f'  ratio on/off   {statistics.median(times[phase]["on"]) / off:.3f}')
        print(f'  ratio off2/off {statistics.median(times[phase]["off2"]) / off:.3f}  '
              '(noise floor)')
    sig = [line[len('signal '):].strip() for line in res.output.splitlines()
           if line.startswith('signal ')]
    if sig:
        print('halted_load per CPU at the end, switch on: ' + ', '.join(sig))
    return 0


if __name__ == '__main__':
    sys.exit(main())
