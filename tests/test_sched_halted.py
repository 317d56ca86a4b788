"""The scheduler's use of guest halted time (kernel.sched_guest_halted):
boot tests in the test VM of the load the balancer takes off a CPU for the
halted vCPUs queued there (the runqueue's halted_load in the scheduler's
debug file, and each task's guest_halted.share and .discount in its
/proc/<pid>/sched), against each vCPU's own contribution to the CPU's load
read independently, in a libvirt-like hierarchy, with several vCPUs per
CPU, under SCHED_IDLE, cpu.idle and RT, and as the vCPU leaves; and the
seed's load-balancing experiment in miniature."""

from __future__ import annotations

import re
import statistics

from conftest import GuestRunner

SWITCH = '/proc/sys/kernel/sched_guest_halted'
# The halted time of the sampled source on SVM (stock QEMU) is an estimate
# (read from the guest's instruction bytes), which the scheduler leaves out
# by default.  These tests of what the scheduler does with halted time take
# estimates in, as an administrator who trusts the guests may; on the model
# (mperf, exact) that changes nothing.  test_spoof.py tests the default.
ENABLE = ('echo 1 > /sys/module/kvm/parameters/guest_halted; '
          'echo 1 > /proc/sys/kernel/sched_guest_halted_estimates')

SHARE_ONE = 1 << 20     # a vCPU task's halted share, guest_halted.share
# How far the runqueue's halted load may be from the vCPUs' task_h_load()
# times their halted shares, both read from the scheduler's debug files
# within a few ms of each other: the 2%, plus a few units of load
# for the instants between the reads.
EXACT = 0.02
SLACK = 8

# Every scenario: the switch and the accounting on, a libvirt-like cgroup
# layout (each VM in its own group under /machine, host daemons under
# /system, two levels), the script on CPU 0 and what it measures on CPU 1.
SETUP = f'''
taskset -pc 0 $$ > /dev/null
{ENABLE}
echo 1 > {SWITCH}
cd /sys/fs/cgroup && echo +cpu > cgroup.subtree_control &&
    mkdir -p machine/vm1 machine/vm2 system && echo +cpu > machine/cgroup.subtree_control
cd /mnt/host
# start NAME CGROUP CPU COMMAND...: run COMMAND in CGROUP on CPU, its pid in
# $NAME; a VMM's pid is added to $vms.
vms=
start() {{
    n=$1 cg=$2 c=$3; shift 3
    sh -c 'echo $$ > /sys/fs/cgroup/'$cg'/cgroup.procs; exec taskset -c '$c' "$@"' sh "$@" > $n.txt 2>&1 &
    eval $n=$!
    case "$*" in *gh-vmm*) vms="$vms $!" ;; esac
}}
# shares TAG: the halted share and discount of every thread of the VMMs.
shares() {{
    for p in $vms; do
        for f in /proc/$p/task/[0-9]*/sched; do
            awk -v f="$f" -v t=$1 '/guest_halted.share/ {{ s = $3 }} /guest_halted.discount/ {{ d = $3 }}
                END {{ if (s != "") print "@@" t, f, s, d }}' "$f" 2>/dev/null
        done
    done
}}
# snap LABEL [CPU]: the CPU's block of the debug file, between two reads of
# the VMMs' shares.
snap() {{
    c=${{2:-1}}
    echo "@@snap $1"
    shares before
    awk -v c="cpu#$c," '$1 == c {{ p = 1; next }} /^cpu#/ {{ p = 0 }} p' /sys/kernel/debug/sched/debug
    shares after
    echo "@@end"
}}
hog='while :; do :; done'
'''


def _snaps(output: str) -> dict[str, dict]:
    """Each snapshot: its CPU's rq and cfs_rq fields (_cpu_block) and, for
    each thread of the VMMs, the lowest and highest of its halted share and
    its discount read before and after, as {'range': {path: (share_lo,
    share_hi, discount_lo, discount_hi)}}."""
    snaps: dict[str, dict] = {}
    for block in output.split('@@snap ')[1:]:
        label, _, rest = block.partition('\n')
        body = rest.split('@@end')[0]
        sd = _cpu_block([ln for ln in body.splitlines() if not ln.startswith('@@')])
        # Each task's share and discount, read just before and just after
        # the debug file: the figures the CPU's halted load was made of lie
        # about in between.
        for tag in ('before', 'after'):
            sd[tag] = {m[0]: (int(m[1]), int(m[2])) for m in
                       re.findall(rf'^@@{tag} (\S+) (\d+) (\d+)$', body, re.M)}
        sd['range'] = {p: (min(s, sd['after'].get(p, (s, d))[0]),
                           max(s, sd['after'].get(p, (s, d))[0]),
                           min(d, sd['after'].get(p, (s, d))[1]),
                           max(d, sd['after'].get(p, (s, d))[1]))
                       for p, (s, d) in sd['before'].items()}
        snaps[label.strip()] = sd
    return snaps


def _cpu_block(lines: list[str]) -> dict:
    """A CPU's rq fields and its cfs_rq fields, as 'field' and
    'cfs:/path:field'."""
    out: dict = {}
    section = ''
    for line in lines:
        m = re.match(r'^cfs_rq\[\d+\]:(\S+)', line)
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


def _h_load(sd: dict, group: str) -> float:
    """The contribution to the root load of a task alone in @group on the
    CPU, as task_h_load() computes it, from the debug file's figures: the
    top group's entity load, times at each level below the share of its
    parent's load that the child's entity makes up."""
    parts = group.strip('/').split('/')
    path = '/' + parts[0]
    h = float(sd[f'cfs:{path}:se->avg.load_avg'])
    for part in parts[1:]:
        child = f'{path}/{part}'
        h = h * sd[f'cfs:{child}:se->avg.load_avg'] / (sd[f'cfs:{path}:load_avg'] + 1)
        path = child
    return h


def _shares(sd: dict) -> list[tuple[float, float]]:
    """The halted shares, read before and after the CPU's block, of the
    threads that halt (share over 0.1), as (lower, higher), largest
    first."""
    return sorted(((lo / SHARE_ONE, hi / SHARE_ONE) for lo, hi, _, _ in sd['range'].values()
                   if hi > SHARE_ONE // 10), reverse=True)


def _assert_exact(sd: dict, contributions: list[tuple[float, tuple[float, float]]],
                  what: str) -> None:
    """The CPU's halted load is each halted vCPU's own contribution to the
    root load (its task_h_load(), read here independently, from its
    group's entity) times its own halted share (as read around it),
    summed; and it is what the tasks say they are taken off for."""
    lo = sum(load * share[0] for load, share in contributions)
    hi = sum(load * share[1] for load, share in contributions)
    got = sd['halted_load']
    assert (1 - EXACT) * lo - SLACK <= got <= (1 + EXACT) * hi + SLACK, \
        (what, got, lo, hi, contributions, sd['range'])
    dlo = sum(r[2] for r in sd['range'].values())
    dhi = sum(r[3] for r in sd['range'].values())
    assert (1 - EXACT) * dlo - SLACK <= got <= (1 + EXACT) * dhi + SLACK, \
        (what, got, sd['range'])


def test_halted_load_is_the_vcpus_own_in_a_libvirt_layout(guest: GuestRunner) -> None:
    """A halting vCPU in /machine/vm1 (cpu.weight 100) and a host daemon in
    /system (cpu.weight 300) share CPU 1.  The balancer's load of CPU 1 is
    the switch-off load less the vCPU's task_h_load() times its halted
    share, within 2%, and that share is the one KVM measured; the daemon's
    load is untouched (the rule this replaces took off half the CPU's
    load, half of it the daemon's).  Switched off, nothing is taken off."""
    res = guest.run(SETUP + '''
echo 100 > /sys/fs/cgroup/machine/cpu.weight
echo 300 > /sys/fs/cgroup/system/cpu.weight
start vm1 machine/vm1 1 gh-vmm halt 8
start daemon system 1 sh -c "$hog"
sleep 4
read -r l1 < /proc/$vm1/stat
for i in 1 2 3 4 5 6 7 8 9 10; do shares second; sleep 0.1; done
read -r l2 < /proc/$vm1/stat
snap on
echo "@@stat $l1"
echo "@@stat $l2"
echo 0 > /proc/sys/kernel/sched_guest_halted
snap off
echo 1 > /proc/sys/kernel/sched_guest_halted
kill $daemon
wait $vm1
''', timeout=300)
    snaps = _snaps(res.output)
    on, off = snaps['on'], snaps['off']
    vcpu_load = _h_load(on, '/machine/vm1')
    daemon_load = on['cfs:/system:se->avg.load_avg']
    shares = _shares(on)
    assert len(shares) == 1, on['range']
    _assert_exact(on, [(vcpu_load, shares[0])], 'libvirt layout')
    # Weight 300 against 100: the daemon's entity weighs about three times
    # the VM's, and the balancer still counts all of it.
    assert daemon_load > 2 * vcpu_load, on
    assert on['cfs:/:load_avg'] - on['halted_load'] >= 0.98 * daemon_load, on
    # The share is the vCPU's own halted fraction as KVM measured it, over
    # the same second: the share weighs the last ~100 ms of its guest time,
    # and beside a host task its spread is about 0.13 (share-bench), so it
    # is read ten times in that second and averaged.
    stats = [ln.split(') ')[1].split() for ln in re.findall(r'^@@stat (.*)$', res.output, re.M)]
    gtime = int(stats[1][40]) - int(stats[0][40])
    halted = int(stats[1][50]) - int(stats[0][50])
    assert gtime > 20, stats
    reads: dict[str, list[int]] = {}
    for path, share in re.findall(r'^@@second (\S+) (\d+) \d+$', res.output, re.M):
        reads.setdefault(path, []).append(int(share))
    second = max(statistics.mean(xs) for xs in reads.values()) / SHARE_ONE
    assert abs(second - halted / gtime) <= 0.1, (second, reads, halted, gtime)
    assert second > 0.7, (second, reads)
    # Switched off: every list emptied, nothing taken off.
    assert off['halted_load'] == 0, off
    assert not any(r[3] for r in off['range'].values()), off['range']


def test_halted_load_of_several_vcpus_on_one_cpu(guest: GuestRunner) -> None:
    """Two halting vCPUs of two VMs on CPU 1: each is taken off for its own
    load and share, not one pooled share for the CPU.  Then one halting
    and one busy vCPU: only the halting one is."""
    res = guest.run(SETUP + '''
start vm1 machine/vm1 1 gh-vmm halt 6
start vm2 machine/vm2 1 gh-vmm halt 6
sleep 4
snap halted2
wait $vm1 $vm2
start vm1 machine/vm1 1 gh-vmm halt 6
start vm2 machine/vm2 1 gh-vmm spoof 6 hlt unaccessed
sleep 4
snap mixed
wait
''', timeout=300)
    snaps = _snaps(res.output)
    sd = snaps['halted2']
    loads = [_h_load(sd, '/machine/vm1'), _h_load(sd, '/machine/vm2')]
    shares = _shares(sd)
    assert len(shares) == 2 and min(lo for lo, _ in shares) > 0.7, sd['range']
    # Which share is whose matters little to the sum when the loads are
    # alike: check that they are (each about half the machine group's),
    # then the sum.
    assert abs(loads[0] - loads[1]) <= 0.1 * max(loads), loads
    _assert_exact(sd, [(sum(loads) / 2, s) for s in shares], 'two halted vCPUs')
    # Two vCPUs, halted 0.9 or more: nearly the whole load is taken off,
    # where one pooled ratio took off one vCPU's.
    assert sd['halted_load'] >= 0.8 * sd['cfs:/:load_avg'], sd
    sd = snaps['mixed']
    shares = _shares(sd)
    assert len(shares) == 1 and shares[0][0] > 0.7, sd['range']
    _assert_exact(sd, [(_h_load(sd, '/machine/vm1'), shares[0])], 'one halted, one busy')
    # The busy one is counted in full.
    busy = _h_load(sd, '/machine/vm2')
    assert sd['cfs:/:load_avg'] - sd['halted_load'] >= 0.98 * busy, sd


def test_halted_load_under_idle_and_rt_policies(guest: GuestRunner) -> None:
    """A SCHED_IDLE vCPU (weight 3) and a vCPU in a cpu.idle group are taken
    off for their own small load, once, beside a host daemon whose load
    stays whole; an RT vCPU is not a CFS task, and nothing is taken off.
    (Each idle vCPU halts alone first: beside the daemon it barely runs,
    and its share follows its own guest time.)"""
    res = guest.run(SETUP + '''
# alone_then_beside LABEL CGROUP CPU COMMAND...: the vCPU halts alone, then
# beside the daemon, and the snapshot is taken.
alone_then_beside() {
    label=$1; shift
    start vm1 "$@"
    sleep 3
    start daemon system 1 sh -c "$hog"
    sleep 1
    snap $label
    kill $daemon
    wait
}
alone_then_beside idle_policy . 1 gh-chrt idle 0 gh-vmm halt 5
echo 1 > /sys/fs/cgroup/machine/cpu.idle
alone_then_beside idle_group machine/vm1 1 gh-vmm halt 5
echo 0 > /sys/fs/cgroup/machine/cpu.idle
start daemon system 1 sh -c "$hog"
start vm1 machine/vm1 1 gh-chrt fifo 1 gh-vmm halt 3
sleep 2
snap rt
kill $daemon
wait
''', timeout=300)
    snaps = _snaps(res.output)
    daemon = 'cfs:/system:se->avg.load_avg'
    sd = snaps['idle_policy']
    shares = _shares(sd)
    assert len(shares) == 1 and shares[0][0] > 0.7, sd['range']
    # The vCPU at the root, weight 3: at most its own entity's load (a load
    # of 3 or less, times its share), nothing of the daemon's.
    assert sd['halted_load'] <= 3, sd
    assert sd['cfs:/:load_avg'] - sd['halted_load'] >= 0.98 * sd[daemon], sd
    sd = snaps['idle_group']
    shares = _shares(sd)
    assert len(shares) == 1, sd['range']
    # /machine idle: its entity weighs 3 at the root, and so does the vCPU.
    group = _h_load(sd, '/machine/vm1')
    _assert_exact(sd, [(group, shares[0])], 'cpu.idle group')
    assert group <= 0.05 * sd[daemon], sd
    assert sd['cfs:/:load_avg'] - sd['halted_load'] >= 0.98 * sd[daemon], sd
    sd = snaps['rt']
    assert sd['halted_load'] == 0, sd
    assert any(k.endswith('rt_nr_running') and v >= 1 for k, v in sd.items()
               if isinstance(v, int)), sd


def test_halted_load_leaves_with_the_vcpu(guest: GuestRunner) -> None:
    """Once the vCPU is no longer queued on CPU 1 (stopped, moved to CPU 2,
    throttled by CFS bandwidth, exited), CPU 1 takes nothing off, at
    once: its numbers are the switch-off numbers."""
    res = guest.run(SETUP + '''
start vm1 machine/vm1 1 gh-vmm halt 30
sleep 3
snap running
kill -STOP $vm1; snap stopped
kill -CONT $vm1; sleep 1; snap resumed
taskset -pc 2 $vm1 > /dev/null; snap moved_from
sleep 0.5; snap moved_to 2
taskset -pc 1 $vm1 > /dev/null; sleep 1
echo "50000 100000" > /sys/fs/cgroup/machine/vm1/cpu.max
sleep 0.5
i=0; while [ $i -lt 25 ]; do snap throttle$i; i=$((i + 1)); done
echo "@@cpu.stat $(grep nr_throttled /sys/fs/cgroup/machine/vm1/cpu.stat)"
echo max > /sys/fs/cgroup/machine/vm1/cpu.max
kill $vm1; wait $vm1
snap exited
''', timeout=300)
    snaps = _snaps(res.output)
    assert snaps['running']['halted_load'] > 500, snaps['running']
    for label in ('stopped', 'moved_from', 'exited'):
        assert snaps[label]['halted_load'] == 0, (label, snaps[label])
    assert snaps['resumed']['halted_load'] > 500, snaps['resumed']
    assert snaps['moved_to']['halted_load'] > 0, snaps['moved_to']
    # The vCPU never sleeps: while nothing is queued on CPU 1 it is
    # throttled (its group's cfs_rq leaves the debug file's list too).
    m = re.search(r'^@@cpu.stat nr_throttled (\d+)', res.output, re.M)
    assert m and int(m.group(1)) > 0, res.output[-2000:]
    samples = [sd for label, sd in snaps.items() if label.startswith('throttle')]
    throttled = [sd for sd in samples if sd['cfs:/:h_nr_queued'] == 0]
    assert throttled, 'the vCPU was never seen throttled'
    assert all(sd['halted_load'] == 0 for sd in throttled), throttled
    # ...and, running between throttles, it is taken off again.
    assert any(sd['halted_load'] > 0 or any(r[3] for r in sd['range'].values())
               for sd in samples), samples


# Each run measures 3 s after the test's default 2 s warm-up.
LB_TEST = '/selftests/guest_halted_lb_test -d 3'
# The margins below were measured with the sampled source (Debian's QEMU,
# no APERF/MPERF, estimates taken in), and the test runs there.
# The busy vCPUs' wait with the switch on, as a share of their wait with it
# off in the same pair of runs, must be under this in every pair: the
# issue's target.  In 16 pairs in two boots on this platform (QEMU TCG, 2
# host cores; GH_PLATFORM=stock scripts/lb-bench.py -r 8 --busy-rounds 0
# --wake-rounds 0) with the 2 s warm-up, the ratio was at most 0.040
# (medians 0.010 and 0.003), the wait off 0.21-0.31; SCHED_IDLE set by hand
# gave 0.013 and 0.018.  Without the warm-up (earlier sessions: 16 pairs,
# 0.004-0.29 on stock; 0.07-0.42 on the model, the first pair of a boot
# the worst) the vCPUs' halted shares were still growing in the measured
# window: Documentation/harness.md.
LB_MARGIN = 0.1
# The stressors' residency on the busy vCPUs' CPUs with the switch on, at
# most: 0.000-0.003 in the same 16 runs.
LB_RESIDENCY = 0.05
LB_PAIRS = 3


def test_switch_lowers_the_busy_vcpus_wait(stock: GuestRunner) -> None:
    """The seed's result in miniature: two busy and two halting vCPUs pinned
    to the four CPUs, two unpinned host stressors; with
    kernel.sched_guest_halted on, the stressors stay off the busy vCPUs'
    CPUs, and the busy vCPUs wait for their CPUs under LB_MARGIN (0.1) of
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


# A halting vCPU that turns busy half way (-b): with the switch off, the
# median of its waits after the turn over BUSY_RUNS runs is the reference
# level; with it on, the time from the turn to the first 10 ms sample from
# which its wait over the next 300 ms, and over the rest of the run, is at
# most 1.1 times that level (busy_recovery_ms) must be at most
# BUSY_RECOVERY_MS in the median of BUSY_RUNS runs of 4 s (2 s after the
# turn), the 500 ms.  In 12 runs in two boots on the model
# (scripts/lb-bench.py --rounds 0 --busy-rounds 4 and 8 --wake-rounds 0,
# -d 3 and 4) it was 87-379 ms but for one run at 729 ms (medians 211 and
# 146 ms), the reference 0.38 and 0.31 of the time (0.12-0.51 per run);
# in 4 boots of a first version with 3 runs of 3 s, 123-287 ms, and once
# each 811 ms and not within the run (-1, the stressor back beside it late
# in the run); in 3 boots of this one, 8-504 ms, medians 180, 131 and 338
# ms.  A run that does not get there counts as the slowest.
BUSY_TEST = '/selftests/guest_halted_lb_test -d 4 -b'
BUSY_RECOVERY_MS = 500
BUSY_RUNS = 5
BUSY_SHARED = 0.4


def test_turned_busy_vcpu_is_counted_in_full_again(guest: GuestRunner) -> None:
    """Two busy and two halting vCPUs pinned to the four CPUs, two unpinned
    stressors; one halting vCPU turns busy half way.  With the switch on
    the stressors sit beside the halting vCPUs; once one of them computes,
    its share falls and the balancer moves the stressor off it: its wait
    comes back to the switch-off level within BUSY_RECOVERY_MS."""
    runs = ' '.join(['1'] * BUSY_RUNS)
    res = guest.run(f'''{ENABLE}
# run SWITCH ARGS...: one turned-busy run, again once if the nested guest
# shut down (a triple fault, about once in a hundred runs under QEMU TCG).
run() {{
    echo $1 > {SWITCH}; shift
    for try in 1 2; do
        {BUSY_TEST} "$@" > /tmp/lb.out 2>&1 && break
        grep -q 'got: 8 (SHUTDOWN)' /tmp/lb.out || break
        echo "@@guest-shutdown"
    done
    grep -E "^busy_(turned|wait_before|wait_after|recovery_ms)=" /tmp/lb.out || cat /tmp/lb.out
}}
for r in {runs}; do echo "@@run off"; run 0; done > /tmp/off.txt
cat /tmp/off.txt
ref=$(sed -n 's/^busy_wait_after=//p' /tmp/off.txt | sort -n | sed -n {(BUSY_RUNS + 1) // 2}p)
echo "@@reference $ref"
for r in {runs}; do echo "@@run on"; run 1 -R "$ref"; done
echo 1 > {SWITCH}''', timeout=600)
    assert res.output.count('@@guest-shutdown') <= 1, res.output
    ref = float(re.search(r'^@@reference ([\d.]+)$', res.output, re.M).group(1))
    # Off, the stressors reach the turned-busy vCPU's CPU too.
    assert ref > 0.1, res.output
    on = res.output.split('@@reference')[1].split('@@run on')[1:]
    assert len(on) == BUSY_RUNS, res.output
    recovery, before = [], []
    for block in on:
        assert re.search(r'^busy_turned=1$', block, re.M), res.output
        m = re.search(r'^busy_recovery_ms=(-?\d+)$', block, re.M)
        b = re.search(r'^busy_wait_before=([\d.]+)$', block, re.M)
        assert m and b, res.output
        recovery.append(int(m.group(1)))
        before.append(float(b.group(1)))
    print(f'turned-busy recovery {recovery} ms, reference {ref}, wait before {before}')
    # On, before the turn, a stressor shared the halting vCPU's CPU (its
    # wait about one half: 0.495-0.507 in the 12 bench runs, 0.13-0.33
    # off); without that there is nothing to recover from.
    assert statistics.median(before) >= BUSY_SHARED, (before, res.output)
    never = 10 ** 9
    assert statistics.median(r if r >= 0 else never for r in recovery) <= BUSY_RECOVERY_MS, \
        (recovery, ref)


# A waker/wakee pair (gh-wake, a wake-up every 2 ms, both threads free to
# run anywhere) beside two halting vCPUs on CPUs 2 and 3, CPUs 0 and 1 idle.
# In 5 rounds of 3 s in one boot on the model (scripts/wake-bench.py) the
# wakee ran on CPUs 2-3 in none of its wake-ups with the switch off, on, or
# the vCPUs SCHED_IDLE, and its median latency was 172 us on against 182
# us off (p99 3.1 ms against 3.3 ms).
WAKE_BESIDE = 0.05
WAKE_P50 = 1.5
WAKE_PAIRS = 3


def test_wakee_goes_to_idle_cpus_not_beside_halted_vcpus(guest: GuestRunner) -> None:
    """With idle CPUs free, the switch on does not place a waking task
    beside a halted vCPU (at most WAKE_BESIDE of its wake-ups on the
    halting vCPUs' CPUs), nor make its wake-ups slower (median latency at
    most WAKE_P50 times the switch-off one), in each of WAKE_PAIRS pairs."""
    runs = ' '.join(['0 1'] * WAKE_PAIRS)
    res = guest.run(f'''{ENABLE}
taskset -c 2 gh-vmm halt 120 > /dev/null & a=$!
taskset -c 3 gh-vmm halt 120 > /dev/null & b=$!
sleep 1
for sw in {runs}; do
    echo $sw > {SWITCH}
    sleep 0.5
    echo "@@run $sw $(grep -E '^cpu#[23],|halted_nr' /sys/kernel/debug/sched/debug | tr -s ' ' | tr '\\n' ' ')"
    gh-wake 2
done
echo 0 > {SWITCH}
kill $a $b
wait''', timeout=300)
    runs_seen: list[tuple[str, float, float, str]] = []
    for block in res.output.split('@@run ')[1:]:
        p50 = re.search(r'^p50_us=([\d.]+)', block, re.M)
        cpus = re.search(r'^on_cpu=([\d.,]+)', block, re.M)
        assert p50 and cpus, res.output
        share = [float(x) for x in cpus.group(1).split(',')]
        runs_seen.append((block[0], float(p50.group(1)), share[2] + share[3],
                          block.splitlines()[0]))
    assert [sw for sw, _, _, _ in runs_seen] == ['0', '1'] * WAKE_PAIRS, res.output
    # With the switch on, each halting vCPU counts as away on its CPU.
    for sw, _, _, head in runs_seen:
        nr = [int(x) for x in re.findall(r'halted_nr : (\d+)', head)]
        assert nr == ([0, 0, 1, 1] if sw == '1' else [0, 0, 0, 0]), runs_seen
    for (_, off, off_beside, _), (_, on, on_beside, _) in zip(runs_seen[::2],
                                                           runs_seen[1::2]):
        assert off_beside <= WAKE_BESIDE and on_beside <= WAKE_BESIDE, runs_seen
        assert on <= WAKE_P50 * off, runs_seen


# An I/O thread woken by its own vCPU: gh-vmm iothread runs a halting guest
# on CPU 2 whose interrupt handler, every 2 ms, writes to a port that KVM
# turns into an eventfd signal, waking the VMM's unpinned I/O thread from
# inside the vCPU's KVM_RUN, as a VMM's ioeventfd does.  Another halting
# guest holds CPU 3; CPUs 0 and 1 are idle.  The switch must not keep the
# I/O thread on its vCPU's CPU (at most IO_BESIDE of its wake-ups there, in
# each of IO_PAIRS pairs), nor make its wake-ups slower (the median over the
# pairs of the p50 at most IO_P50 times the switch-off one).  A rule that
# counted a CPU running a mostly halted vCPU as idle for placement, as the
# previous version's sched_idle_cpu() did, keeps the I/O thread there.  A
# SCHED_IDLE vCPU is no stable contrast: the I/O thread stayed beside it in
# 3 runs and left it in 2 (an active balance moves it to an idle CPU, which
# its later wake-ups then keep).
IO_BESIDE = 0.05
IO_P50 = 1.5
IO_PAIRS = 3


def test_iothread_woken_by_its_vcpu_leaves_the_vcpus_cpu(guest: GuestRunner) -> None:
    runs = ' '.join(['0 1'] * IO_PAIRS)
    res = guest.run(f'''{ENABLE}
taskset -c 3 gh-vmm halt 120 > /dev/null & a=$!
for sw in {runs}; do
    echo $sw > {SWITCH}
    echo "@@run $sw"
    gh-vmm iothread 2 2000 2
done
echo 0 > {SWITCH}
kill $a
wait''', timeout=300)
    seen: list[tuple[str, float, float, int]] = []
    for block in res.output.split('@@run ')[1:]:
        kv = dict(re.findall(r'^(\w+)=(\S+)$', block, re.M))
        assert {'p50_us', 'beside', 'wakes'} <= kv.keys(), res.output
        seen.append((block.split()[0], float(kv['p50_us']), float(kv['beside']),
                     int(kv['wakes'])))
    assert [sw for sw, _, _, _ in seen] == ['0', '1'] * IO_PAIRS, res.output
    # 2 s at one wake-up per 2 ms: most of the 1000 wake-ups are seen.
    assert all(n >= 500 for _, _, _, n in seen), seen
    for (_, _, off_beside, _), (_, _, on_beside, _) in zip(seen[::2], seen[1::2]):
        assert off_beside <= IO_BESIDE and on_beside <= IO_BESIDE, seen
    # Latency over the pairs: a single pair's p50 moves by half under TCG
    # when the host is busy (226.6 us off against 350.8 us on, seen once).
    off_p50 = statistics.median(p50 for sw, p50, _, _ in seen if sw == '0')
    on_p50 = statistics.median(p50 for sw, p50, _, _ in seen if sw == '1')
    assert on_p50 <= IO_P50 * off_p50, seen
