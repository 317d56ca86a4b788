"""The scheduler's use of guest halted time (kernel.sched_guest_halted):
boot tests in the test VM of what the load balancer reads of a CPU whose
only task is a halted vCPU, with the switch off and on, in a two-level
cgroup hierarchy, against the halted fraction KVM measured."""

from __future__ import annotations

import math
import re

from conftest import GuestRunner

SWITCH = '/proc/sys/kernel/sched_guest_halted'
# The ticks a PELT average weighs, in effect: (1 + y) / (1 - y) for the
# decay y per tick, 0.5 ** (4 / 32) at HZ=250 with PELT's 32 ms half-life.
PELT_TICKS = 23
# The halted time of the sampled source on SVM (stock QEMU) is an estimate
# (read from the guest's instruction bytes), which the scheduler leaves out
# by default.  These tests of what the scheduler does with halted time take
# estimates in, as an administrator who trusts the guests may; on the model
# (mperf, exact) that changes nothing.  test_spoof.py tests the default.
ENABLE = ('echo 1 > /sys/module/kvm/parameters/guest_halted; '
          'echo 1 > /proc/sys/kernel/sched_guest_halted_estimates')

# The halting vCPU runs on CPU 1, in cgroup /a/b, for the whole script;
# the switch goes off, on, off, on, 3 s each, and at the end of each
# stretch the script prints the vCPU's gtime and gtime_halted (clock
# ticks) and, three times, CPU 1's block of the scheduler's debug file.
# The script itself runs on CPU 0: with the switch on, wakeup placement
# counts CPU 1 as idle and would put its commands there.
SCRIPT = f'''
taskset -pc 0 $$ > /dev/null
{ENABLE}
cd /sys/fs/cgroup && echo +cpu > cgroup.subtree_control && mkdir -p a/b &&
    echo +cpu > a/cgroup.subtree_control
cd /mnt/host
sh -c 'echo $$ > /sys/fs/cgroup/a/b/cgroup.procs; exec taskset -c 1 gh-vmm halt 16' \\
    > vmm.txt &
sleep 1
pid=$!
stat() {{ read -r line < /proc/$pid/stat; set -- ${{line##*) }}; echo "$1 ${{41}} ${{51}}"; }}
for sw in 0 1 0 1; do
    echo $sw > {SWITCH}
    sleep 1
    echo "begin $sw $(stat)"
    sleep 2
    echo "end $sw $(stat)"
    for k in 1 2 3; do
        awk '/^cpu#1,/ {{ p = 1; next }} /^cpu#/ {{ p = 0 }} p' /sys/kernel/debug/sched/debug |
            sed "s/^/sd $sw $k /"
    done
done
echo 1 > {SWITCH}
wait
'''


def _cpu_block(lines: list[str]) -> dict[str, int]:
    """CPU 1's rq fields and its cfs_rq fields, as 'field' and
    'cfs:/path:field'."""
    out: dict[str, int] = {}
    section = ''
    for line in lines:
        m = re.match(r'^cfs_rq\[1\]:(\S+)', line)
        if m:
            section = f'cfs:{m.group(1)}:'
            continue
        if re.match(r'^\w+_rq\[', line):
            section = 'other:'
            continue
        m = re.match(r'^\s+\.([\w.>-]+)\s*:\s*(-?\d+)\s*$', line)
        if m:
            out.setdefault(section + m.group(1), int(m.group(2)))
    return out


def test_halted_cpu_reads_free_to_the_balancer(guest: GuestRunner) -> None:
    """With the switch off, the CPU of a vCPU that only halts reads as busy
    to the balancer; with it on, the scheduler's halted share is the one
    KVM measured, and the balancer reads the CPU as free.  The PELT
    hierarchy (cfs_rq of /, /a and /a/b) reads the same either way: the
    vCPU still runs all the time to PELT."""
    res = guest.run(SCRIPT, timeout=300)
    stretches: list[dict] = []
    for line in res.output.splitlines():
        m = re.match(r'^(begin|end) ([01]) \S+ (\d+) (\d+)$', line)
        if m and m.group(1) == 'begin':
            stretches.append({'sw': m.group(2), 'begin': tuple(map(int, m.group(3, 4))),
                              'sd': {}})
        elif m:
            stretches[-1]['end'] = tuple(map(int, m.group(3, 4)))
        elif line.startswith('sd ') and stretches:
            stretches[-1]['sd'].setdefault(line[5], []).append(line[len('sd 0 1 '):])
    assert [st['sw'] for st in stretches] == ['0', '1', '0', '1'], res.output
    assert all('end' in st for st in stretches), res.output

    for st in stretches:
        sw, reads = st['sw'], [_cpu_block(lines) for lines in st['sd'].values()]
        assert len(reads) == 3, res.output
        # What the balancer reads of CPU 1 while the halted vCPU is its only
        # task: a kworker or an interrupt thread can be there for a moment.
        alone = [sd for sd in reads if sd['nr_running'] == 1]
        assert alone, (sw, reads)
        sd = alone[0]
        if sw == '0':
            # Off, whatever else runs there, the CPU never reads as idle.
            assert all(r['balance_idle'] == 0 for r in reads), reads
        gtime = st['end'][0] - st['begin'][0]
        halted = st['end'][1] - st['begin'][1]
        assert gtime > 150, (sw, gtime)        # 2 s at USER_HZ 100, all guest time
        measured = halted / gtime
        load, util = sd['cfs:/:load_avg'], sd['cfs:/:util_avg']
        # The vCPU runs all the time to PELT, at every level of the
        # hierarchy, whatever the switch says.
        for path in ('/', '/a', '/a/b'):
            assert sd[f'cfs:{path}:util_avg'] >= 800, (sw, path, sd)
        assert load >= 800, (sw, sd)
        if sw == '0':
            # Off: nothing tracked, and the balancer reads the full load.
            assert sd['avg_halted'] == 0 and sd['guest_halted'] == 0, sd
            assert sd['balance_idle'] == 0, sd
            assert abs(sd['balance_load'] - load) <= 0.05 * load + 20, sd
            continue
        # On: the vCPU's own halted share, over the guest time on the CPU,
        # is the one KVM accounted, and the share of the CPU's time about
        # the same, as the vCPU is alone there...
        own, cpu_share = sd['guest_halted'] / 1024, sd['avg_halted'] / 1024
        assert measured > 0.7, (measured, halted, gtime)
        # The averages weigh the last ~100 ms, KVM's figure the whole 2 s:
        # allow three standard errors of a halted share sampled once a tick
        # over PELT's window on top.
        p = min(max((own + measured) / 2, 0.0), 1.0)
        noise = 3 * math.sqrt(p * (1 - p) / PELT_TICKS)
        assert abs(own - measured) <= 0.10 + noise, (own, measured, noise, sd)
        assert abs(cpu_share - measured) <= 0.15 + noise, (cpu_share, measured, noise, sd)
        # ...so the balancer counts the vCPU, halted more than half its
        # time, for nearly nothing, as it would a SCHED_IDLE task, and
        # placement counts the CPU as idle.
        assert sd['balance_load'] <= 0.1 * load, sd
        assert sd['balance_idle'] == 1, sd
        assert util >= 800, sd


LB_TEST = '/selftests/guest_halted_lb_test -d 3'
# The margins below were measured with the sampled source (Debian's QEMU,
# no APERF/MPERF), and the test runs there.  On the APERF/MPERF model the
# halting vCPUs read 90-95% halted rather than ~100% (the emulated exits
# count as busy) and in one CI run the effect was weaker: wait ratio
# 0.03-0.25, residency 0.008-0.136.  The scheduler's rebuild on exact
# sources re-measures both.
# The busy vCPUs' wait with the switch on, as a share of their wait with it
# off in the same pair of runs, must be under this in every pair.  In 10
# pairs of runs in one boot on this platform (QEMU TCG, 2 host cores;
# scripts/lb-bench.py -r 10) the ratio was 0.010-0.080, median 0.05, with
# the wait off at 0.21-0.30; SCHED_IDLE set by hand gave 0.011-0.076.
LB_MARGIN = 0.25
# The stressors' residency on the busy vCPUs' CPUs with the switch on, at
# most: 0.004-0.031 in the same 10 runs (0.000-0.021 with SCHED_IDLE).
LB_RESIDENCY = 0.1
LB_PAIRS = 3


def test_switch_lowers_the_busy_vcpus_wait(stock: GuestRunner) -> None:
    """The seed's result in miniature: two busy and two halting vCPUs pinned
    to the four CPUs, two unpinned host stressors; with
    kernel.sched_guest_halted on, the stressors stay off the busy vCPUs'
    CPUs, and the busy vCPUs wait for their CPUs less than a quarter of
    what they wait with it off, in each of LB_PAIRS pairs of runs."""
    runs = ' '.join(['0 1'] * LB_PAIRS)
    # A nested guest that shuts down (a triple fault, seen about once in a
    # hundred runs under QEMU TCG, with the switch off as well) is run
    # again, once; the test fails if that happens more than once.
    res = stock.run(f'''{ENABLE}
for sw in {runs}; do
    echo $sw > {SWITCH}
    for try in 1 2; do
        {LB_TEST} > /tmp/lb.out 2>&1 && break
        grep -q 'got: 8 (SHUTDOWN)' /tmp/lb.out || break
        echo "@@guest-shutdown $sw"
    done
    echo "@@run $sw"
    grep -E "^(meter_wait|stressor_residency)=" /tmp/lb.out || cat /tmp/lb.out
done
echo 1 > {SWITCH}''', timeout=600)
    assert res.output.count('@@guest-shutdown') <= 1, res.output
    runs_seen: list[tuple[str, float, float]] = []
    for block in res.output.split('@@run ')[1:]:
        sw = block[0]
        m = re.search(r'^meter_wait=([\d.]+),([\d.]+)', block, re.M)
        r = re.search(r'^stressor_residency=([\d.]+),([\d.]+)', block, re.M)
        assert m and r, res.output
        runs_seen.append((sw, (float(m.group(1)) + float(m.group(2))) / 2,
                          float(r.group(1)) + float(r.group(2))))
    assert [sw for sw, _, _ in runs_seen] == ['0', '1'] * LB_PAIRS, res.output
    for (_, off, _), (_, on, on_res) in zip(runs_seen[::2], runs_seen[1::2]):
        # Off, the stressors land on the busy vCPUs' CPUs too...
        assert off > 0.05, runs_seen
        # ...on, on the halting ones, as with SCHED_IDLE.
        assert on < LB_MARGIN * off, runs_seen
        assert on_res <= LB_RESIDENCY, runs_seen
