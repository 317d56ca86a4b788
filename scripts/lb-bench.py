#!/usr/bin/python3
"""Host load balancing around halting vCPUs: the seed experiment in miniature.

One boot of the test VM runs the KVM selftest guest_halted_lb_test (two busy
vCPUs running a noise meter, two halting vCPUs, all pinned to host CPUs 0-3,
and unpinned busy-loop stressors on the host) with kvm.guest_halted on, in
ROUNDS interleaved rounds of three modes, each run measured after a warm-up
(--warm-up, 2 s):

  off    kernel.sched_guest_halted=0: a halting vCPU's CPU counts as busy
  on     kernel.sched_guest_halted=1: it should count as nearly idle
  idle   the switch off and the halting vCPUs' threads SCHED_IDLE (-i): the
         reference, what the scheduler can do when it knows

and then -b runs, where one halting vCPU turns busy half way: first with
the switch off, whose median wait after the turn is the reference level (or
--reference), then with the switch on and with SCHED_IDLE: how soon that
vCPU's run-queue wait is back within 10% of the switch-off level, over the
next 300 ms and the rest of the run (and, in brackets, when a trailing
300 ms window first came that low, which lags by up to its length).  A
SCHED_IDLE vCPU that turns busy has the weight 3 against a stressor's
1024, and does not.

Last, -W runs in the three modes, where the halting vCPUs arm their timer
every --wake-us instead of at most once a second and count, in the guest,
how late each interrupt reached them: the price a halted guest pays when
the host lets a stressor share its CPU (p50 and p99 of the lateness).

The figure of merit is the busy vCPUs' run-queue wait as a share of wall
time: the ratios wait(on)/wait(off) and wait(idle)/wait(off).  A kernel
without the switch runs "off" and "idle" only.  The meters' availability
(the share of their run not lost to gaps between TSC reads) is printed for
information: under QEMU TCG it counts the emulator's own stalls too.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmrun  # noqa: E402

TEST = '/selftests/guest_halted_lb_test'
PARAM = '/sys/module/kvm/parameters/guest_halted'
SWITCH = '/proc/sys/kernel/sched_guest_halted'

# The whole run in the VM.  Output of each run is framed by "@@run" and
# "@@end" lines; the turned-busy vCPU's reference wait is the median of its
# waits after the turn in the "busy_off" runs unless given.
GUEST_SCRIPT = '''
T={test}
S={switch}
{setup}echo 1 > {param} || {{ echo "@@error kvm.guest_halted cannot be switched on"; exit 1; }}
# The sampled source's figures on SVM are estimates; take them in, as an
# administrator who trusts the guests may, to measure what the switch does.
echo 1 > /proc/sys/kernel/sched_guest_halted_estimates 2>/dev/null
echo "@@accounting $(cat {param}) $(cat {param}_source 2>/dev/null)"
if [ -w $S ]; then
	sw=1
	saved=$(cat $S)
else
	sw=0
	echo "@@switch unavailable"
fi
run() {{
	label=$1
	shift
	# A nested guest that shuts down (a triple fault, seen about once in
	# a hundred runs under QEMU TCG) is run again, once, and counted.
	for try in 1 2; do
		$T {common} "$@" > /tmp/lb.out 2>&1 &
		pid=$!
		# A run that does not end: show where its threads wait.
		( sleep {hang_s}; [ -d /proc/$pid ] || exit 0
		  echo "@@hang label=$label round=$r"
		  for t in /proc/$pid/task/*; do
			echo "@@hang-task ${{t##*/}} $(cut -d' ' -f3,39 $t/stat) $(cat $t/wchan 2>/dev/null)"
		  done
		  kill -9 $pid ) &
		dog=$!
		wait $pid
		rc=$?
		kill $dog 2>/dev/null
		[ $rc = 0 ] || ! grep -q 'got: 8 (SHUTDOWN)' /tmp/lb.out && break
		echo "@@guest-shutdown label=$label round=$r"
		sed 's/^/@@shutdown-log /' /tmp/lb.out
	done
	echo "@@run label=$label round=$r"
	cat /tmp/lb.out
	cp /tmp/lb.out "/tmp/lb.$label.$r"
	echo "@@end rc=$rc"
}}
for r in $(seq {rounds}); do
	[ $sw = 1 ] && echo 0 > $S
	run off
	if [ $sw = 1 ]; then
		echo 1 > $S
		run on
		echo 0 > $S
	fi
	run idle -i
done
[ $sw = 1 ] && echo 0 > $S
for r in $(seq {busy_rounds}); do
	run busy_off -b
done
ref={reference}
if [ -z "$ref" ]; then
	ref=$(cat /tmp/lb.busy_off.* | sed -n 's/^busy_wait_after=//p' | sort -n |
		awk '{{ a[NR] = $1 }} END {{ if (NR % 2) print a[(NR + 1) / 2];
			else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }}')
fi
echo "@@reference $ref"
for r in $(seq {busy_rounds}); do
	if [ $sw = 1 ]; then
		echo 1 > $S
		run busy_on -b -R "$ref"
		echo 0 > $S
	fi
	run busy_idle -b -i -R "$ref"
done
for r in $(seq {wake_rounds}); do
	[ $sw = 1 ] && echo 0 > $S
	run wake_off -W {wake_us}
	if [ $sw = 1 ]; then
		echo 1 > $S
		run wake_on -W {wake_us}
		echo 0 > $S
	fi
	run wake_idle -i -W {wake_us}
done
[ $sw = 1 ] && echo "$saved" > $S
echo 0 > {param}
exit 0
'''

# A libvirt-like layout, two levels: the VM (this shell and so the test) in
# /machine/vm1, the stressors, as host daemons, in /system at cpu.weight 300
# against /machine's 100.  SCHED_IDLE (-i) then acts within vm1's group
# only, against the VM's own threads.
CGROUP = '/sys/fs/cgroup'
LIBVIRT_SETUP = f'''echo +cpu > {CGROUP}/cgroup.subtree_control
mkdir -p {CGROUP}/machine/vm1 {CGROUP}/system
echo +cpu > {CGROUP}/machine/cgroup.subtree_control
echo 300 > {CGROUP}/system/cpu.weight
echo $$ > {CGROUP}/machine/vm1/cgroup.procs
echo "@@libvirt $(cat /proc/self/cgroup)"
'''

RUN_RE = re.compile(r'^@@run label=(\w+) round=(\d+)\n(.*?)^@@end rc=(\d+)$', re.M | re.S)
KV_RE = re.compile(r'^(\w+)=(\S*)\s*$', re.M)
RC_SKIP = 4


class Run:
    def __init__(self, label: str, rnd: int, text: str, rc: int):
        self.label = label
        self.round = rnd
        self.rc = rc
        self.text = text
        self.kv = dict(KV_RE.findall(text))

    def floats(self, key: str) -> list[float]:
        val = self.kv.get(key, '')
        return [float(x) for x in val.split(',') if x] if val else []

    def one(self, key: str) -> Optional[float]:
        xs = self.floats(key)
        return xs[0] if xs else None

    @property
    def meter_wait(self) -> float:
        return statistics.mean(self.floats('meter_wait'))

    @property
    def on_halters(self) -> float:
        """Stressor residency on the halting vCPUs' CPUs (2 and 3)."""
        return sum(self.floats('stressor_residency')[2:4])


def fmt(xs: list[float], prec: int = 3) -> str:
    return ','.join(f'{x:.{prec}f}' for x in xs)


def stat_line(name: str, xs: list[float]) -> str:
    return (f'  {name:<5} median {statistics.median(xs):.4f}  min {min(xs):.4f}  '
            f'max {max(xs):.4f}  (runs: {fmt(xs, 4)})')


def ratio_line(name: str, num: list[float], den: list[float]) -> str:
    med_d, min_d = statistics.median(den), min(den)
    med = f'{statistics.median(num) / med_d:.3f}' if med_d > 0 else 'n/a'
    mn = f'{min(num) / min_d:.3f}' if min_d > 0 else 'n/a'
    return f'  {name}: median {med}, min {mn}'


def report_plain(runs: list[Run], modes: list[str]) -> None:
    """The plain runs: the busy vCPUs' wait and the stressors' residency."""
    print('\nrun          meter_wait   halt_wait    availability  '
          'stressor_residency (CPU 0-3)  moves/s')
    for r in runs:
        if r.label.startswith(('busy', 'wake')):
            continue
        print(f'{r.label:<5} #{r.round:<4}  {fmt(r.floats("meter_wait")):<11}  '
              f'{fmt(r.floats("halt_wait")):<11}  {fmt(r.floats("availability")):<12}  '
              f'{fmt(r.floats("stressor_residency")[:4]):<28}  '
              f'{r.one("stressor_moves_per_s") or 0:.2f}')

    wait = {m: [r.meter_wait for r in runs if r.label == m] for m in modes}
    print('\nbusy vCPUs\' run-queue wait, share of wall time (mean of the two meters):')
    for m in modes:
        print(stat_line(m, wait[m]))
    print('ratios (the lower the better; median: of the medians, min: of the minima):')
    if 'on' in wait:
        print(ratio_line('wait(on)/wait(off)        ', wait['on'], wait['off']))
    else:
        print('  wait(on)/wait(off): switch unavailable')
    print(ratio_line('wait(SCHED_IDLE)/wait(off)', wait['idle'], wait['off']))

    print('\nstressors\' residency on the halting vCPUs\' CPUs (2+3), mean of runs:')
    for m in modes:
        print(f'  {m:<5} {statistics.mean(r.on_halters for r in runs if r.label == m):.3f}')
    print('meters\' availability (informational), median of runs:')
    for m in modes:
        xs = [x for r in runs if r.label == m for x in r.floats('availability')]
        print(f'  {m:<5} {statistics.median(xs):.3f}')


def report(runs: list[Run], reference: Optional[float]) -> int:
    modes = [m for m in ('off', 'on', 'idle') if any(r.label == m for r in runs)]
    if modes:
        report_plain(runs, modes)

    wake = [r for r in runs if r.label.startswith('wake')]
    if wake:
        print(f'\nthe price to the halting guests: the lateness of their own timer '
              f'interrupts (every {wake[0].one("wake_period_us") or 0:.0f} us), measured in '
              'the guest, in us (upper bound of a half-octave bucket), median of runs:')
        for m in ('wake_off', 'wake_on', 'wake_idle'):
            rs = [r for r in wake if r.label == m]
            if rs:
                p50 = statistics.median(r.one('wake_late_p50_us') or 0 for r in rs)
                p99 = statistics.median(r.one('wake_late_p99_us') or 0 for r in rs)
                print(f'  {m:<9} p50 {p50:8.0f}  p99 {p99:8.0f}  (p99 runs: '
                      f'{fmt([r.one("wake_late_p99_us") or 0 for r in rs], 0)}; '
                      f'busy vCPUs\' wait {fmt([r.meter_wait for r in rs], 3)})')

    busy = [r for r in runs if r.label.startswith('busy')]
    if busy:
        ref = f'{reference:.4f}' if reference is not None else 'unknown'
        print('\nturned-busy vCPU 3 (halts, then spins from half way); reference: its '
              f'median wait after the turn with the switch off, {ref}')
        print('run              wait before  wait after  recovery  (trailing)  availability after')

        def ms(key: str, r: Run) -> str:
            rec = r.one(key)
            return 'never' if rec is not None and rec < 0 else (
                f'{rec:.0f} ms' if rec is not None else 'n/a')
        for r in busy:
            print(f'{r.label:<9} #{r.round:<4}  {r.one("busy_wait_before") or 0:11.4f}  '
                  f'{r.one("busy_wait_after") or 0:10.4f}  {ms("busy_recovery_ms", r):>8}  '
                  f'{ms("busy_recovery_trailing_ms", r):>10}  '
                  f'{r.one("busy_availability") or 0:.3f}')
        for r in busy:
            print(f'  {r.label} #{r.round} 100 ms bins: {fmt(r.floats("busy_bins"), 2)}')
        if reference:
            print('wait after the turn over the reference, median of runs (within 10%: '
                  'at most 1.1):')
            for m in ('busy_on', 'busy_idle'):
                xs = [r.one('busy_wait_after') or 0 for r in busy if r.label == m]
                if xs:
                    print(f'  {m:<9} {statistics.median(xs) / reference:.2f}')
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', '-r', type=int, default=3,
                    help='rounds of off, on, SCHED_IDLE runs (default 3)')
    ap.add_argument('--busy-rounds', type=int, default=2,
                    help='rounds of turned-busy runs, switch off, on and SCHED_IDLE '
                    '(default 2)')
    ap.add_argument('--seconds', '-d', type=float, default=3.0,
                    help='run time of each run (default 3)')
    ap.add_argument('--stressors', '-s', type=int, default=2,
                    help='host busy-loop processes (default 2)')
    ap.add_argument('--threshold-ns', type=int,
                    help='meters\' gap threshold (default: 10x the median gap)')
    ap.add_argument('--reference', type=float,
                    help='reference wait for the turned-busy vCPU\'s recovery '
                    '(default: its median wait after the turn, switch off)')
    ap.add_argument('--wake-rounds', type=int, default=2,
                    help='rounds of off, on, SCHED_IDLE runs where the halting vCPUs '
                    'wake every --wake-us and time it (default 2)')
    ap.add_argument('--wake-us', type=int, default=10000,
                    help='the halting vCPUs\' timer period in those runs (default 10000)')
    ap.add_argument('--libvirt', action='store_true',
                    help='run the VM in /machine/vm1 and the stressors in /system '
                    '(cpu.weight 300), as libvirt and systemd lay a host out')
    ap.add_argument('--warm-up', type=float, default=2.0,
                    help='seconds each run warms up before it measures (default 2)')
    ap.add_argument('--raw', action='store_true', help='print the VM\'s output too')
    args = ap.parse_args()

    common = f'-d {args.seconds} -s {args.stressors} -w {args.warm_up}'
    setup = ''
    if args.libvirt:
        common += f' -g {CGROUP}/system'
        setup = LIBVIRT_SETUP
    if args.threshold_ns:
        common += f' -T {args.threshold_ns}'
    script = GUEST_SCRIPT.format(test=TEST, switch=SWITCH, param=PARAM, common=common,
                                 hang_s=int((args.seconds + args.warm_up) * 4 + 60),
                                 setup=setup,
                                 rounds=args.rounds, busy_rounds=args.busy_rounds,
                                 wake_rounds=args.wake_rounds, wake_us=args.wake_us,
                                 reference='' if args.reference is None else args.reference)
    nruns = 3 * (args.rounds + args.busy_rounds + args.wake_rounds)
    print(f'lb-bench: {args.rounds} x (off, on, SCHED_IDLE) + {args.busy_rounds} x '
          f'turned-busy (off, on, SCHED_IDLE) runs of {args.seconds:g} s, {args.stressors} stressors, '
          f'{"libvirt-like cgroups, " if args.libvirt else ""}one boot...')
    res = vmrun.run_or_report('lb-bench', script,
                              timeout=180 + nruns * (args.seconds + args.warm_up + 10) * 2)
    if res is None:
        return 1
    if args.raw:
        print(res.output)

    m = re.search(r'^@@accounting (\S+) ?(\S*)', res.output, re.M)
    if m:
        print(f'kvm.guest_halted={m.group(1)}, source of halted time: {m.group(2) or "?"}')
    if re.search(r'^@@switch unavailable', res.output, re.M):
        print(f'switch unavailable ({SWITCH} missing): running "off" and '
              '"SCHED_IDLE" only')
    runs = [Run(label, int(rnd), text, int(rc))
            for label, rnd, text, rc in RUN_RE.findall(res.output)]
    skipped = [r for r in runs if r.rc == RC_SKIP]
    if skipped:
        print(f'lb-bench: the test skipped:\n{skipped[0].text}', file=sys.stderr)
        return 4
    failed = [r for r in runs if r.rc != 0 or 'meter_wait' not in r.kv]
    if failed or not runs:
        print(f'lb-bench: a run failed or printed no results:\n{res.output}', file=sys.stderr)
        return 1
    shutdowns = re.findall(r'^@@guest-shutdown label=(\w+) round=(\d+)', res.output, re.M)
    if shutdowns:
        print(f'lb-bench: the nested guest shut down (triple fault) in {len(shutdowns)} '
              f'run(s), run again: {", ".join(f"{lb} #{rnd}" for lb, rnd in shutdowns)}')
    ref = re.search(r'^@@reference (\S+)', res.output, re.M)
    try:
        reference = float(ref.group(1)) if ref else None
    except ValueError:
        reference = None
    return report(runs, reference)


if __name__ == '__main__':
    sys.exit(main())
