#!/usr/bin/python3
"""make bench: a sweep of host stressors beside a halting VM and a busy VM.

One boot of the test VM (4 CPUs).  Two nested guests run with HLT passed
through, their vCPU threads free to run on any CPU (gh-vmm duty): a
halting VM of two vCPUs, halted but for a timer interrupt every 10 ms,
and a busy VM of two vCPUs, each spinning 99% of every 10 ms.  Beside them
1, 2, 4, 6 and then 8 host stressors (busy loops) run.  For each count the
modes alternate within each round:

  off    kernel.sched_guest_halted=0
  on     kernel.sched_guest_halted=1
  idle   the switch off and the halting VM's vCPU threads SCHED_IDLE: the
         reference

Each run starts the halting VM, gives the host a second to learn its
halted share, then starts the busy VM and the stressors for SECONDS.  It
reports the busy vCPUs' run-queue wait as a share of the run (their
schedstat), the stressors' CPU share (CPU time over wall time, mean per
stressor) and their moves per second (se.nr_migrations), the vCPUs'
moves, and the halting vCPUs' halted time (KVM's guest_halted_ns) over
wall time, which falls as they share their CPUs.  With N stressors and
four vCPUs on four CPUs there is room for the busy vCPUs to run alone
only while N is at most 2 and the stressors share the halting vCPUs'
CPUs; past that the busy vCPUs' wait grows in every mode, and the figures
show how the switch shares it out.
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

GUEST_SCRIPT = '''{preamble}# Field 14 + 15 of /proc/PID/stat (the comm, "sh", holds no space), in
# ticks, and se.nr_migrations, of every stressor.
stressors_stat() {{
	for p in $spids; do
		set -- $(cat /proc/$p/stat)
		m=$(sed -n 's/^se.nr_migrations *: *//p' /proc/$p/sched)
		echo -n "$((${{14}} + ${{15}})):$m "
	done
}}
for n in {counts}; do
	for r in $(seq {rounds}); do
		for mode in off on idle; do
			[ $mode = on ] && echo 1 > {switch} || echo 0 > {switch}
			pol=
			[ $mode = idle ] && pol="gh-chrt idle 0"
			$pol gh-vmm duty {halt_s} 10000 0 2 > /tmp/halting.out &
			hpid=$!
			sleep 1
			gh-vmm duty {seconds} 10000 99 2 > /tmp/busy.out &
			bpid=$!
			spids=
			for i in $(seq $n); do
				sh -c 'while :; do :; done' &
				spids="$spids $!"
			done
			t0=$(cut -d' ' -f1 /proc/uptime)
			s0=$(stressors_stat)
			wait $bpid
			s1=$(stressors_stat)
			t1=$(cut -d' ' -f1 /proc/uptime)
			kill $spids
			wait $hpid
			wait
			echo "run n=$n round=$r mode=$mode t0=$t0 t1=$t1 s0=${{s0% }} s1=${{s1% }}" \\
				"$(sed 's/^/busy_/' /tmp/busy.out | tr '\\n' ' ')" \\
				"$(sed 's/^/halting_/' /tmp/halting.out | tr '\\n' ' ')"
		done
	done
done
echo 0 > {switch}
echo 0 > {param}
'''

RUN_RE = re.compile(r'^run n=(\d+) round=(\d+) mode=(\w+) (.*)$', re.M)
KV_RE = re.compile(r'(\w+)=(\S+)')


def floats(val: str) -> list[float]:
    return [float(x) for x in val.split(',') if x]


def parse(rest: str, clk_tck: int) -> dict[str, float]:
    kv = dict(KV_RE.findall(rest))
    # s0 and s1 are "ticks:moves" per stressor, space-separated: KV_RE
    # keeps only the first, so read them again whole.
    s0 = re.search(r's0=(.*?) s1=', rest).group(1).split()
    s1 = re.search(r's1=(.*?) busy_', rest).group(1).split()
    wall = float(kv['t1']) - float(kv['t0'])
    cpu = [(int(b.split(':')[0]) - int(a.split(':')[0])) / clk_tck / wall
           for a, b in zip(s0, s1)]
    moves = [(int(b.split(':')[1] or 0) - int(a.split(':')[1] or 0)) / wall
             for a, b in zip(s0, s1)]
    return {
        'busy_wait': statistics.mean(floats(kv['busy_wait'])),
        'busy_halted': statistics.mean(floats(kv['busy_halted'])),
        'halting_halted': statistics.mean(floats(kv['halting_halted'])),
        'stressor_cpu': statistics.mean(cpu),
        'stressor_moves': statistics.mean(moves),
        'vcpu_moves': (sum(floats(kv['busy_moves'])) + sum(floats(kv['halting_moves']))) / wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', '-r', type=int, default=2)
    ap.add_argument('--seconds', '-d', type=int, default=3)
    ap.add_argument('--stressors', default='1,2,4,6,8',
                    help='stressor counts, comma-separated (default 1,2,4,6,8)')
    args = ap.parse_args()
    counts = [int(x) for x in args.stressors.split(',')]

    budget = 60 + len(counts) * args.rounds * 3 * (args.seconds + 4) * 2
    script = GUEST_SCRIPT.format(preamble=vmrun.SCHED_BENCH_PREAMBLE, switch=SWITCH,
                                 param=PARAM, rounds=args.rounds,
                                 seconds=args.seconds, halt_s=args.seconds + 2,
                                 counts=' '.join(map(str, counts)))
    print(f'sweep-bench: {len(counts)} stressor counts x {args.rounds} rounds of (off, on, '
          f'SCHED_IDLE), {args.seconds} s each, one boot...')
    res = vmrun.run_or_report('sweep-bench', script, timeout=budget)
    if res is None:
        return 1
    print(f'source of halted time: {vmrun.source_of(res.output)}; a halting VM (2 vCPUs, '
          'halted) and a busy VM (2 vCPUs, 99% busy), all unpinned, on 4 CPUs')
    runs: dict[tuple[int, str], list[dict[str, float]]] = {}
    for n, _, mode, rest in RUN_RE.findall(res.output):
        try:
            runs.setdefault((int(n), mode), []).append(parse(rest, 100))
        except (AttributeError, KeyError, ValueError, statistics.StatisticsError) as e:
            print(f'sweep-bench: cannot read a run ({e}): {rest}', file=sys.stderr)
            return 1
    print('stressors mode   busy vCPUs\' wait  stressors\' CPU share  stressor moves/s  '
          'vCPU moves/s  halting vCPUs halted/wall  (medians of runs)')
    for n in counts:
        for mode in MODES:
            rs = runs.get((n, mode), [])
            if len(rs) != args.rounds:
                print(f'sweep-bench: {n}/{mode}: {len(rs)} runs of {args.rounds}:\n'
                      f'{res.output[-3000:]}', file=sys.stderr)
                return 1

            def med(key: str) -> float:
                return statistics.median(r[key] for r in rs)
            print(f'{n:>9} {mode:<5}  {med("busy_wait"):16.3f}  {med("stressor_cpu"):19.3f}  '
                  f'{med("stressor_moves"):16.1f}  {med("vcpu_moves"):12.1f}  '
                  f'{med("halting_halted"):25.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
