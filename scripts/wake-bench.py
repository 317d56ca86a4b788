#!/usr/bin/python3
"""make bench: host wake-up latency and load balancing beside halted vCPUs.

One boot of the test VM (4 CPUs).  Each run starts nested guests, each a
vCPU thread pinned to one CPU, waits a second for their halted shares, and
measures for SECONDS; the modes alternate within each round:

  off    kernel.sched_guest_halted=0
  on     kernel.sched_guest_halted=1
  idle   the switch off and the halting vCPUs SCHED_IDLE: the reference

Scenarios:

  free     two halting guests on CPUs 2 and 3, CPUs 0 and 1 idle: an
           unpinned waker/wakee pair (gh-wake, a wake-up every 2 ms).  The
           switch must not make wake-ups slower, nor place the wakee beside
           a halted vCPU while idle CPUs exist.
  full     the same two halting guests, and two busy guests (CPUID exits
           handled in KVM) on CPUs 0 and 1: no CPU is idle.  With the switch
           on, the wakee should be at least as prompt as with it off.  Two
           more modes, the switch off, pin the pair by hand: "halted" to
           CPUs 2-3, beside the halted vCPUs, and "busy" to CPUs 0-1: what
           a wake-up beside each kind of vCPU costs on this platform,
           whatever the scheduler would choose.
  io       a halting guest on CPU 2 whose interrupt handler, every 2 ms,
           writes to a port that KVM turns into an eventfd signal
           (KVM_IOEVENTFD), waking its VMM's unpinned I/O thread from
           inside the vCPU's KVM_RUN (gh-vmm iothread), and another halting
           guest on CPU 3; CPUs 0 and 1 idle.  The I/O thread must not stay
           on its vCPU's CPU; SCHED_IDLE, where it does, is shown beside.
  balance  four halting guests, one per CPU, and nothing else: load-balance
           attempts per second (a kprobe on sched_balance_rq()), which the
           switch must not multiply.

The result lines give, per scenario and mode, the medians over rounds of
the wakee's (or I/O thread's) p50 and p99 latency, the share of wake-ups
on the halting vCPUs' CPUs 2 and 3, and the balance attempts per second.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmrun  # noqa: E402

SWITCH = vmrun.SCHED_SWITCH
PARAM = vmrun.KVM_PARAM
MODES = ('off', 'on', 'idle')
# The full scenario's pair pinned by hand, the switch off: beside the
# halted vCPUs (CPUs 2-3), and beside the busy ones (CPUs 0-1).
PINNED = ('halted', 'busy')

GUEST_SCRIPT = '''{preamble}T=/sys/kernel/tracing
echo 'p:ghlb sched_balance_rq' >> $T/kprobe_events || echo "@@error no kprobe on sched_balance_rq"
start() {{	# start MODE CPU KIND: a nested guest's vCPU pinned to CPU
	pol=
	[ $1 = idle ] && [ $3 = halt ] && pol="gh-chrt idle 0"
	if [ $3 = halt ]; then
		taskset -c $2 $pol gh-vmm halt 600 > /dev/null &
	else
		taskset -c $2 gh-vmm kexits 2000000000 passthrough > /dev/null &
	fi
	pids="$pids $!"
}}
for r in $(seq {rounds}); do
	for sc in {scenarios}; do
		modes="off on idle"
		[ $sc = full ] && modes="off on idle halted busy"
		for mode in $modes; do
			[ $mode = on ] && echo 1 > {switch} || echo 0 > {switch}
			pids=
			if [ $sc = balance ]; then
				for c in 0 1 2 3; do start $mode $c halt; done
			elif [ $sc = io ]; then
				start $mode 3 halt
			else
				start $mode 2 halt
				start $mode 3 halt
				[ $sc = full ] && start $mode 0 busy && start $mode 1 busy
			fi
			sleep 1
			if [ $sc = balance ]; then
				echo > $T/trace
				echo 1 > $T/events/kprobes/ghlb/enable
				sleep {seconds}
				echo 0 > $T/events/kprobes/ghlb/enable
				n=$(grep -c ghlb: $T/trace)
				echo "run sc=$sc round=$r mode=$mode attempts_per_s=$(($n / {seconds}))"
			elif [ $sc = io ]; then
				pol=
				[ $mode = idle ] && pol=idle
				out=$(gh-vmm iothread {seconds} 2000 2 $pol | tr '\n' ' ')
				echo "run sc=$sc round=$r mode=$mode $out"
			else
				cpus=0,1,2,3
				[ $mode = halted ] && cpus=2,3
				[ $mode = busy ] && cpus=0,1
				out=$(taskset -c $cpus gh-wake {seconds} | tr '\\n' ' ')
				echo "run sc=$sc round=$r mode=$mode $out"
			fi
			kill $pids 2>/dev/null
			wait
		done
	done
done
echo 0 > {switch}
echo 0 > {param}
'''

RUN_RE = re.compile(r'^run sc=(\w+) round=(\d+) mode=(\w+) (.*)$', re.M)
KV_RE = re.compile(r'(\w+)=(\S+)')
SCENARIOS = {'free': 'idle CPUs free (halting vCPUs on CPUs 2, 3; CPUs 0, 1 idle)',
             'full': 'no idle CPU (halting vCPUs on CPUs 2, 3; busy vCPUs on 0, 1)',
             'io': 'an I/O thread woken by its halting vCPU (CPU 2) through an eventfd; '
                   'CPU 3 halting, CPUs 0, 1 idle',
             'balance': 'four halting vCPUs, one per CPU'}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', '-r', type=int, default=5)
    ap.add_argument('--seconds', '-d', type=int, default=3)
    ap.add_argument('--scenario', '-s', action='append', choices=list(SCENARIOS),
                    help='run only this scenario (again for more; default: all)')
    args = ap.parse_args()
    scenarios = [sc for sc in SCENARIOS if sc in (args.scenario or SCENARIOS)]

    budget = 60 + args.rounds * 14 * (args.seconds + 4) * 2 * len(scenarios) // 4 + 60
    script = GUEST_SCRIPT.format(preamble=vmrun.SCHED_BENCH_PREAMBLE, switch=SWITCH,
                                 param=PARAM, rounds=args.rounds,
                                 seconds=args.seconds, scenarios=' '.join(scenarios))
    print(f'wake-bench: {args.rounds} rounds of (off, on, SCHED_IDLE) x '
          f'({", ".join(scenarios)}){", and full pinned by hand" if "full" in scenarios else ""}, '
          f'{args.seconds} s each, one boot...')
    res = vmrun.run_or_report('wake-bench', script, timeout=budget)
    if res is None:
        return 1
    print(f'source of halted time: {vmrun.source_of(res.output)}')
    runs: dict[tuple[str, str], list[dict[str, str]]] = {}
    for sc, _, mode, rest in RUN_RE.findall(res.output):
        runs.setdefault((sc, mode), []).append(dict(KV_RE.findall(rest)))
    for sc in scenarios:
        print(f'{SCENARIOS[sc]}:')
        for mode in MODES + (PINNED if sc == 'full' else ()):
            rs = runs.get((sc, mode), [])
            if len(rs) != args.rounds:
                print(f'wake-bench: {sc}/{mode}: {len(rs)} runs of {args.rounds}:\n'
                      f'{res.output[-3000:]}', file=sys.stderr)
                return 1
            if sc == 'balance':
                xs = [int(r['attempts_per_s']) for r in rs]
                print(f'  {mode:<5} balance attempts/s median {statistics.median(xs)} '
                      f'(runs: {", ".join(map(str, xs))})')
                continue
            p50 = statistics.median(float(r['p50_us']) for r in rs)
            p99 = statistics.median(float(r['p99_us']) for r in rs)
            beside = statistics.median(sum(float(x) for x in r['on_cpu'].split(',')[2:4])
                                       for r in rs)
            print(f'  {mode:<6} wakee p50 {p50:7.1f} us  p99 {p99:8.1f} us  '
                  f'on CPUs 2-3 {beside:.3f}  (runs: p50 '
                  f'{", ".join(r["p50_us"] for r in rs)}; p99 '
                  f'{", ".join(r["p99_us"] for r in rs)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
