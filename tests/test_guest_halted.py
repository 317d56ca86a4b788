"""Guest halted-time accounting: the KUnit suites run in the test kernel,
boot tests of every interface, and the end-to-end selftest against the
guest's own ground truth.  The interface tests run on the default platform
(the QEMU that models APERF/MPERF, so the mperf source); the accuracy
tests run on both platforms: the model (mperf) and Debian's QEMU, which
has no APERF/MPERF (the sampled source).  Figures on the model are model
figures."""

from __future__ import annotations

import math
import re

import pytest

from conftest import BUILD, GuestRunner, parse_kv

PLATFORM_SOURCE = {'model': 'mperf', 'stock': 'sampled'}


@pytest.fixture(params=sorted(PLATFORM_SOURCE))
def any_platform(request: pytest.FixtureRequest) -> GuestRunner:
    """Each platform in turn: the model (mperf) and stock QEMU (sampled)."""
    return request.getfixturevalue(request.param)

KUNIT_SUITES = {
    'kvm-x86-guest-halted': BUILD / 'linux' / 'arch/x86/kvm/guest_halted_test.c',
    'proc-array': BUILD / 'linux' / 'fs/proc/array_kunit.c',
    'sched-guest-halted': BUILD / 'linux' / 'kernel/sched/guest_halted_test.c',
}
PARAMS = '/sys/module/kvm/parameters'
USER_HZ = 100           # /proc clock ticks, as the selftest prints gtime
KERNEL_HZ = 250         # the test kernel's tick (kernel/configs), one sample each
ENABLE = f'echo 1 > {PARAMS}/guest_halted'
SELFTEST_LINE = re.compile(
    r'^(passthrough|no passthrough|accounting off), ([\w% ]+): guest ([\d.]+)% halted, '
    r'host ([\d.]+)% halted \(error ([-+][\d.]+) pp, budget ([\d.]+) pp: '
    r"[^;]*; guest's TSC alone ([\d.]+)%\); gtime (\d+) ticks", re.M)



def test_kunit_suites_pass(guest: GuestRunner) -> None:
    # Only these suites are built (KUNIT_ALL_TESTS=n), so no filter is needed.
    res = guest.run('dmesg', append='kunit.enable=1')
    results = {name: (status, rest) for status, name, rest in
               re.findall(r'\b(not ok|ok) \d+ (\w[\w-]*)(.*)$', res.output, re.M)}
    for suite, source in KUNIT_SUITES.items():
        cases = re.findall(r'KUNIT_CASE\((\w+)\)', source.read_text())
        assert len(cases) >= 3, f'{suite}: too few cases in {source}'
        for case in cases:
            assert case in results, f'KUnit case {case} did not run:\n{res.output[-3000:]}'
            status, rest = results[case]
            assert status == 'ok' and '# SKIP' not in rest, \
                f'{suite}.{case}: {status}{rest}'
        assert results.get(suite, ('missing',))[0] == 'ok', suite


def test_proc_stat_field_53(guest: GuestRunner) -> None:
    res = guest.run(f'{ENABLE}; gh-vmm halt 6 > vmm.txt & sleep 2; '
                    'gh-procstat > procstat.txt; wait; cat vmm.txt')
    vmm = parse_kv(res.output)
    vcpu_tid = vmm['tid']
    rows = [ln.split() for ln in (res.share / 'procstat.txt').read_text().splitlines()]
    assert len(rows) > 20
    seen_vcpu = False
    for pid, tid, nfields, gtime, halted in rows:
        assert nfields == '51', f'pid {pid} tid {tid}: {nfields} fields after comm, want 51'
        assert int(halted) <= int(gtime), f'pid {pid} tid {tid}: {halted} > gtime {gtime}'
        if tid == vcpu_tid or (pid, tid) == (vcpu_tid, '-'):
            # The vCPU thread, and gh-vmm's process line (its other thread,
            # KVM's NX huge page worker, runs no guest): two seconds into
            # halting, there is halted time.
            seen_vcpu = seen_vcpu or tid == vcpu_tid
            assert int(gtime) > 0 and int(halted) > 0, f'vCPU: gtime {gtime}, halted {halted}'
        else:
            assert int(halted) == 0, f'pid {pid} tid {tid}: not a vCPU, gtime_halted {halted}'
    assert seen_vcpu, f'vCPU thread {vcpu_tid} not in /proc'
    # The guest does nothing but halt: nearly all its guest time is halted.
    gtime, halted = int(vmm['gtime_ticks']), int(vmm['gtime_halted_ticks'])
    assert gtime > 400, vmm
    assert 0.90 * gtime <= halted <= gtime, vmm


def test_tracepoint_and_format(guest: GuestRunner) -> None:
    res = guest.run('cat /sys/kernel/tracing/events/kvm/guest_halted/format')
    fields = dict(re.findall(r'field:[\w ]*?\b(\w+);\s+offset:\d+;\s+size:(\d+);',
                             res.output))
    for name, size in (('vcpu_id', '4'), ('exit_reason', '4'), ('isa', '4'),
                       ('tsc_delta', '8'), ('mperf_delta', '8'), ('gtime_ns', '8'),
                       ('halted_ns', '8'), ('halted_cycles', '8'), ('source', '4'),
                       ('derived', '1'), ('estimate', '1')):
        assert fields.get(name) == size, f'field {name}: {fields.get(name)}\n{res.output}'
    assert 'print fmt:' in res.output
    assert '"mperf"' in res.output and '"sampled"' in res.output


def test_tracepoint_found_by_its_users_name(guest: GuestRunner) -> None:
    """kvm:guest_halted, as users type it, in perf list, perf record and
    Debian's trace-cmd; one event per accounted interval, summing to the
    vCPU statistic exactly."""
    res = guest.run(f"perf list 'kvm:*' 2>&1 | grep -w 'kvm:guest_halted'; {ENABLE}; "
                    'perf record -q -e kvm:guest_halted -o rec.data -- gh-vmm halt 2 > vmm.txt; '
                    'perf script -i rec.data > script.txt; '
                    'trace-cmd record -q -e kvm:guest_halted -o tc.dat gh-vmm halt 1 '
                    '> tc-vmm.txt 2> tc.err; echo tc_rc=$?; '
                    'trace-cmd report -i tc.dat > tc.txt 2>&1; echo tc_report_rc=$?')
    assert re.search(r'^\s*kvm:guest_halted\s+\[Tracepoint event\]', res.output, re.M), \
        res.output
    script = (res.share / 'script.txt').read_text().splitlines()
    vmm = parse_kv((res.share / 'vmm.txt').read_text())
    events = [ln for ln in script if 'kvm:guest_halted:' in ln]
    assert len(events) >= 100, script[:5]
    halted_ns = sum(int(re.search(r' halted_ns (\d+)', ln).group(1)) for ln in events)
    gtime_ns = sum(int(re.search(r' gtime_ns (\d+)', ln).group(1)) for ln in events)
    assert halted_ns == int(vmm['stat_guest_halted_ns']), (halted_ns, vmm)
    assert 0 < halted_ns <= gtime_ns
    # One event per accounted interval: a tick's worth of guest time or more.
    hz = int(vmm['clk_tck'])
    assert abs(gtime_ns / 1e9 * hz - int(vmm['gtime_ticks'])) <= 1, (gtime_ns, vmm)
    kv = parse_kv(res.output)
    assert kv.get('tc_rc') == '0', (res.share / 'tc.err').read_text()
    assert kv.get('tc_report_rc') == '0'
    tc = [ln for ln in (res.share / 'tc.txt').read_text().splitlines() if 'guest_halted:' in ln]
    assert len(tc) >= 50, (res.share / 'tc.txt').read_text()[-2000:]


# How far the perf event's count may be from the vCPU statistic in TSC
# cycles: measured cycles against the ticks' guest time (see below).  1%
# on an idle host; late ticks under QEMU TCG on a loaded one add more.
EVENT_TOLERANCE = 0.05


def test_software_event_listed_and_counts(guest: GuestRunner) -> None:
    res = guest.run(f'perf list sw 2>&1; {ENABLE}; '
                    'perf stat -x, -o stat.csv -e guest_halted_cycles -- gh-vmm halt 2; '
                    'perf stat -x, -o stat-u.csv -e guest_halted_cycles:u -e guest_halted_cycles:k '
                    '-e guest_halted_cycles:H '
                    '-- gh-vmm halt 1 > vmm-u.txt; '
                    'perf record -q -e guest_halted_cycles -c 100000000 -o rec.data '
                    '-- gh-vmm halt 1 > /dev/null; '
                    'perf script -i rec.data -F comm,tid,event,period,ip > script.txt')
    assert re.search(r'guest-halted-cycles OR guest_halted_cycles\s+\[Software event\]',
                     res.output), res.output
    rows = [ln.split(',') for ln in (res.share / 'stat.csv').read_text().splitlines()
            if 'guest-halted-cycles' in ln or 'guest_halted_cycles' in ln]
    assert len(rows) == 1, (res.share / 'stat.csv').read_text()
    vmm = parse_kv(res.output)
    # The event counts the cycles that the vCPU statistic counts in ns.
    # Under mperf they are measured TSC cycles, which follow wall time,
    # and the statistic is the ticks' guest time times the halted share:
    # a tick that comes late, as under QEMU TCG on a loaded host, is
    # accounted one tick of guest time but measured over its whole
    # interval.  Within EVENT_TOLERANCE.
    want = int(vmm['stat_guest_halted_ns']) * int(vmm['tsc_khz']) / 1e6
    assert want > 0 and abs(int(rows[0][0]) - want) <= EVENT_TOLERANCE * want, (rows[0], vmm)
    # Guest time is neither host user nor host kernel time: only
    # exclude_guest, which :u and :H set, excludes it; :k counts it all.
    rows = [ln.split(',') for ln in (res.share / 'stat-u.csv').read_text().splitlines()
            if 'guest' in ln]
    vmm_u = parse_kv((res.share / 'vmm-u.txt').read_text())
    want = int(vmm_u['stat_guest_halted_ns']) * int(vmm_u['tsc_khz']) / 1e6
    assert len(rows) == 3, rows
    assert int(rows[0][0]) == 0 and int(rows[2][0]) == 0, rows
    assert want > 0 and abs(int(rows[1][0]) - want) <= EVENT_TOLERANCE * want, (rows, vmm_u)
    # perf record samples it: one sample per 1e8 halted cycles, on the vCPU
    # thread, at a user address (the VMM's KVM_RUN), never a kernel one.
    samples = (res.share / 'script.txt').read_text().splitlines()
    assert len(samples) >= 3, samples
    assert all('guest_halted_cycles' in ln or 'guest-halted-cycles' in ln for ln in samples), \
        samples[:5]
    ips = [int(m.group(1), 16) for ln in samples if (m := re.search(r'\b([0-9a-f]{6,16})\b', ln))]
    assert ips and all(ip < 0x800000000000 for ip in ips), samples[:5]


def test_software_event_same_count_for_unprivileged_owner(guest: GuestRunner) -> None:
    """At perf_event_paranoid=2, a non-root user counting their own VMM gets
    the count root gets: the perf tool falls back to exclude_kernel, which
    does not hide guest time (only exclude_guest does)."""
    res = guest.run(f'{ENABLE}; echo nobody:x:65534:65534:nobody:/tmp:/bin/sh >> /etc/passwd; '
                    'chmod 666 /dev/kvm; cat /proc/sys/kernel/perf_event_paranoid; '
                    "su -s /bin/sh nobody -c 'id -u; perf stat -x, -o /tmp/user.csv "
                    "-e guest_halted_cycles -- gh-vmm halt 2 > /tmp/user-vmm.txt'; "
                    'cp /tmp/user.csv /tmp/user-vmm.txt .; '
                    'perf stat -x, -o root.csv -e guest_halted_cycles -- gh-vmm halt 2 > root-vmm.txt')
    lines = res.output.split()
    assert lines[:2] == ['2', '65534'], res.output
    for who in ('user', 'root'):
        vmm = parse_kv((res.share / f'{who}-vmm.txt').read_text())
        row = [ln.split(',') for ln in (res.share / f'{who}.csv').read_text().splitlines()
               if 'guest' in ln]
        want = int(vmm['stat_guest_halted_ns']) * int(vmm['tsc_khz']) / 1e6
        assert len(row) == 1 and want > 1e8, (who, row, vmm)
        assert abs(int(row[0][0]) - want) <= EVENT_TOLERANCE * want, (who, row, vmm)


def test_source_and_parameters(any_platform: GuestRunner) -> None:
    """auto means mperf where the (modelled) CPU has APERF/MPERF, and on
    this host, itself a guest, the sampled source where it has none."""
    res = any_platform.run(
        f'cat {PARAMS}/guest_halted {PARAMS}/guest_halted_source; '
        f'echo mperf > {PARAMS}/guest_halted_source || echo mperf=refused; '
        f'echo bogus > {PARAMS}/guest_halted_source || echo bogus=refused; '
        f'echo source=$(cat {PARAMS}/guest_halted_source); '
        f'{ENABLE} && echo on=$(cat {PARAMS}/guest_halted); '
        f'echo 0 > {PARAMS}/guest_halted && echo off=$(cat {PARAMS}/guest_halted); '
        'dmesg')
    want = PLATFORM_SOURCE[any_platform.platform]
    lines = res.output.splitlines()
    assert lines[0:2] == ['N', want], res.output
    assert 'bogus=refused' in res.output and 'Invalid argument' in res.output
    kv = parse_kv(res.output)
    if want == 'sampled':
        # No APERF/MPERF here: forcing mperf is refused rather than faked.
        assert 'mperf=refused' in res.output and 'No such device' in res.output
        assert res.output.count('MPERF: no APERF/MPERF') == 1
        assert res.output.count('no usable APERF/MPERF, running as a guest: '
                                'using the sampled source') == 1
    else:
        assert 'mperf=refused' not in res.output
        assert len(re.findall(r'MPERF: [\d.]+ TSC cycles per MPERF cycle', res.output)) == 1
    assert (kv['source'], kv['on'], kv['off']) == (want, 'Y', 'N'), kv


def test_switched_off_accounts_zero(guest: GuestRunner) -> None:
    res = guest.run('gh-vmm halt 2')
    r = parse_kv(res.output)
    assert int(r['gtime_ticks']) > 150
    assert r['gtime_halted_ticks'] == '0'
    assert r['stat_guest_halted_ns'] == '0'


def test_nohz_full_accounts_halted_within_gtime(guest: GuestRunner) -> None:
    """On a nohz_full CPU vtime accounts guest time at guest exit, not at
    ticks: halted time is accounted there too, and stays within gtime."""
    res = guest.run(f'cat /sys/devices/system/cpu/nohz_full; {ENABLE}; '
                    'taskset -c 3 gh-vmm halt 3', append='nohz_full=2-3')
    assert res.output.splitlines()[0].strip() == '2-3', res.output
    vmm = parse_kv(res.output)
    gtime, halted = int(vmm['gtime_ticks']), int(vmm['gtime_halted_ticks'])
    assert gtime > 150, vmm
    # A guest that only halts: nearly all of it, never more than all.
    assert 0.8 * gtime <= halted <= gtime, vmm


# How far gtime - gtime_halted may go down between two reads, in /proc's
# clock ticks (10 ms), per source (Documentation/admin-guide.md): mperf at
# the host tick credits both at once, so by the one tick /proc rounds to;
# sampled by the halted part of the guest time since the last sample, whose
# intervals are exponential with a mean of one host tick (4 ms): more than
# 30 ms (7.5 means) has a probability of 0.06% per read, plus the rounding.
BUSY_DROP_TICKS = {'mperf': 1, 'sampled': 4}


def test_busy_time_never_negative_per_second(any_platform: GuestRunner) -> None:
    """Over consecutive 1 s windows of a running VM, gtime - gtime_halted
    goes down by no more than the source's bound, as a tool computing busy
    time per interval would see it, and gtime_halted <= gtime at every
    read."""
    guest = any_platform
    res = guest.run(f'{ENABLE}; /selftests/guest_halted_test -p 3700 > st.txt 2>&1 & '
                    'sleep 1; tid=$(ls /proc/$!/task | sort -n | head -1); '
                    'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do '
                    '  read -r line < /proc/$!/task/$tid/stat || break; '
                    '  set -- ${line##*) }; echo "w ${41} ${51}"; sleep 1; done; wait')
    rows = [tuple(map(int, ln.split()[1:])) for ln in res.output.splitlines()
            if re.match(r'^w \d+ \d+$', ln)]
    assert len(rows) >= 8, res.output
    assert rows[-1][0] - rows[0][0] > 500 and rows[-1][1] > rows[0][1], rows
    drop = BUSY_DROP_TICKS[PLATFORM_SOURCE[guest.platform]]
    for (g0, h0), (g1, h1) in zip(rows, rows[1:]):
        assert (g1 - g0) - (h1 - h0) >= -drop, rows
        assert h1 <= g1, rows


def _selftest_rows(output: str) -> dict[str, list]:
    by_kind: dict[str, list] = {}
    for kind, what, guest_pct, host_pct, err, budget, raw, gtime in \
            SELFTEST_LINE.findall(output):
        by_kind.setdefault(kind, []).append((what, float(guest_pct), float(host_pct),
                                             float(err), float(budget), float(raw),
                                             int(gtime) / USER_HZ))
    return by_kind


def _limit(budget: float, host_pct: float, gtime_s: float) -> float:
    """sampled: 5 points, or where it is larger the error budget plus three
    standard errors of the sampled estimate.  The budget is the share of
    the vCPU's run time spent outside guest mode (traced from each
    kvm_exit to the next kvm_entry), which the guest's clock counts and the
    host's guest time does not: under QEMU TCG an exit costs about 100 us,
    so a guest that exits a thousand times a second has a budget of 10
    points; on hardware it is well under one.  The sampled source takes
    one sample per host tick on average (HZ=250 in the test kernel), so
    over N samples its estimate of a fraction p has a standard error of
    sqrt(p(1-p)/N): 1.6 points at 50% over the phase's 4 s."""
    p = host_pct / 100
    samples = max(gtime_s * KERNEL_HZ, 1)
    return max(5.0, budget + 3 * 100 * math.sqrt(p * (1 - p) / samples))


def _check_host(source: str, what: str, guest_pct: float, host_pct: float, err: float,
                budget: float, raw: float, gtime_s: float) -> None:
    """The host's halted fraction against the guest's.  The guest knows its
    own figure only to within the exits its halts ended in: its TSC alone
    counts them all as halted, its corrected figure counts none (each
    costed at the median exit it saw in busy loops).

    mperf: MPERF, exact on the model, counts every moment the CPU spends
    outside the guest's halt as unhalted, the exits included, and the
    interval's halted share is of wall time: the host reads low by the
    share of time outside guest mode, never high.  It is at most 1 point
    above the guest, and at most 1 point plus twice the traced budget
    below: the trace sees KVM's part of an exit, not TCG's emulation of
    VMRUN and #VMEXIT around it, which measured as large again (model
    figures; on hardware an exit costs about a microsecond).

    sampled: within _limit() of the range between the two figures."""
    lo, hi = min(guest_pct, raw), max(guest_pct, raw)
    if source == 'mperf':
        assert lo - 1.0 - 2 * budget <= host_pct <= hi + 1.0, \
            (source, what, guest_pct, raw, host_pct, err, budget)
        return
    limit = _limit(budget, host_pct, gtime_s)
    assert lo - limit <= host_pct <= hi + limit, \
        (source, what, guest_pct, raw, host_pct, err, budget, round(limit, 2))


def _source(output: str) -> str:
    m = re.search(r'source of halted time: (\w+)', output)
    assert m, output
    return m.group(1)


@pytest.mark.parametrize('period_us', [13700, 3700, 1370])
def test_halted_fraction_matches_guest_ground_truth(any_platform: GuestRunner,
                                                    period_us: int) -> None:
    """x86_64/guest_halted_test: the host's numbers agree exactly, and match
    the guest's own RDTSC measurement within _limit() at each duty cycle,
    with the guest's timer at three periods."""
    res = any_platform.run(f'/selftests/guest_halted_test -p {period_us} -t 100', timeout=300)
    source = _source(res.output)
    assert source == PLATFORM_SOURCE[any_platform.platform], res.output
    by_kind = _selftest_rows(res.output)
    assert [w for w, *_ in by_kind.get('passthrough', [])] == \
        ['0% duty', '50% duty', '90% duty', '100% duty'], res.output
    for what, guest_pct, host_pct, err, budget, raw, gtime_s in by_kind['passthrough']:
        duty = int(what.split('%')[0])
        # The guest ran the duty cycle it was asked for, by its TSC...
        assert abs(raw - duty) <= 10, (what, raw)
        # ...and the host saw it.
        _check_host(source, what, guest_pct, host_pct, err, budget, raw, gtime_s)
        assert abs(host_pct - guest_pct - err) <= 0.11, (what, host_pct, err)
    for kind in ('no passthrough', 'accounting off'):
        assert len(by_kind.get(kind, [])) == 4, res.output
        assert all(host_pct == 0 for _, _, host_pct, *_ in by_kind[kind]), by_kind[kind]


def test_halted_fraction_of_a_guest_that_polls_after_each_wakeup(
        any_platform: GuestRunner) -> None:
    """A guest that polls for a fixed time after every wake-up, 0 to 50% of
    the host tick (4 ms): on SVM the host's own interrupts wake it, so its
    activity follows them.  Sampling at the tick would report it halted
    whatever it polls, an error of poll/tick (10, 25 and 50 points here);
    the sampled source's random instants see it within 5 points (or the
    exit-cost budget)."""
    res = any_platform.run('/selftests/guest_halted_test -t 100 -w 0 -w 400 -w 1000 -w 2000',
                           timeout=300)
    source = _source(res.output)
    assert source == PLATFORM_SOURCE[any_platform.platform], res.output
    rows = _selftest_rows(res.output).get('passthrough', [])
    assert [w for w, *_ in rows] == ['poll 0 us', 'poll 400 us', 'poll 1000 us',
                                     'poll 2000 us'], res.output
    for what, guest_pct, host_pct, err, budget, raw, gtime_s in rows:
        _check_host(source, what, guest_pct, host_pct, err, budget, raw, gtime_s)
    # The polls really happened: the guest was busy more as it polled longer.
    assert rows[0][1] > rows[-1][1] + 10, rows


def test_halted_fraction_with_mwait_passed_through(model: GuestRunner) -> None:
    """The selftest's guest waiting in MWAIT, with MWAIT passed through
    (KVM_X86_DISABLE_EXITS_MWAIT) and the modelled CPU's MWAIT halting like
    HLT: the mperf source sees it as it sees HLT."""
    res = model.run('/selftests/guest_halted_test -m -p 3700 -t 100', timeout=300)
    assert 'MWAIT' in res.output, res.output
    source = _source(res.output)
    assert source == 'mperf', res.output
    by_kind = _selftest_rows(res.output)
    assert [w for w, *_ in by_kind.get('passthrough', [])] == \
        ['0% duty', '50% duty', '90% duty', '100% duty'], res.output
    for what, guest_pct, host_pct, err, budget, raw, gtime_s in by_kind['passthrough']:
        duty = int(what.split('%')[0])
        assert abs(raw - duty) <= 10, (what, raw)
        _check_host(source, what, guest_pct, host_pct, err, budget, raw, gtime_s)
    for kind in ('no passthrough', 'accounting off'):
        assert all(host_pct == 0 for _, _, host_pct, *_ in by_kind[kind]), by_kind[kind]


# The share of its guest time at which a guest that only halts is
# accounted, at least, on both platforms: on the model the exits of the
# host tick are time MPERF counts as running (test_mperf.py).
ONLY_HALTS = 0.90


def _switched_on_and_off(runner: GuestRunner, append: str = '') -> None:
    script = (
        'taskset -c 2 gh-vmm halt 7 > vmm.txt & sleep 1; '
        'tid=$(ls /proc/$!/task | sort -n | head -1); '
        'rd() { read -r l < /proc/$!/task/$tid/stat; set -- ${l##*) }; echo "$1 ${41} ${51}"; }; '
        f'echo "a $(rd)"; {ENABLE}; sleep 2; echo "b $(rd)"; '
        f'echo 0 > {PARAMS}/guest_halted; echo "o $(rd)"; sleep 1.5; echo "c $(rd)"; '
        f'{ENABLE}; sleep 1.5; echo "d $(rd)"; wait')
    res = runner.run(script, append=append)
    pts = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in
           re.finditer(r'^([abocd]) \S+ (\d+) (\d+)$', res.output, re.M)}
    assert set(pts) == set('abocd'), res.output
    (ga, ha), (gb, hb), (go, ho), (gc, hc), (gd, hd) = (pts[k] for k in 'abocd')
    assert ha == 0 and gb - ga > 150, pts
    # On: all but the first interval after the switch (its baseline) halted.
    assert hb - ha >= ONLY_HALTS * (gb - ga) - 3, pts
    # Between the read at b and the switch-off, the shell's few ms: at
    # most what the guest ran then.  Off: nothing more.
    assert hb <= ho <= hb + (go - gb) + 1, pts
    assert hc == ho and gc - go > 100, pts
    # On again.
    assert hd - hc >= ONLY_HALTS * (gd - gc) - 3 and gd - gc > 100, pts


def test_switched_on_and_off_while_a_vcpu_runs(any_platform: GuestRunner) -> None:
    """Accounting switched on while a pinned vCPU already halts in guest
    mode (it never returns to user space), then off and on again: halted
    time is accounted while it is on, and none after the switch-off has
    returned (read at 'o', right after it, and 1.5 s later at 'c')."""
    _switched_on_and_off(any_platform)


def test_sampled_switched_on_while_a_vcpu_runs_alone_on_its_cpu(stock: GuestRunner) -> None:
    """The same on a nohz_full CPU, where nothing else runs to switch the
    vCPU out, so it is never loaded again: the sampled source's timer is
    started by the guest time accounted at an exit (was: never started,
    and the vCPU accounted 0 halted for as long as it ran).  On nohz_full
    the mperf source's halted time arrives at exits, which a guest that
    only halts makes rarely there (measured: 0.5 to 1.5 s of the first
    2 s lost after the switch-on), so it is not held to this
    test's 3-tick bound (test_mperf.py tests it on nohz_full)."""
    _switched_on_and_off(stock, 'nohz_full=2-3')


def test_nested_guest_halts_count_under_every_source(any_platform: GuestRunner) -> None:
    """One rule for L2 halts: a vCPU whose L2 guest halts, with HLT passed
    through by L1 and by the host, halts the CPU, and each source counts it
    as halted (x86_64/guest_halted_nested_test, SVM).  L2 halts with
    interrupts off until 1000 host interrupts have ended its HLTs.
    Measured: sampled 100%, mperf 94% (the model counts the exits as
    running).  With accounting off nothing is halted."""
    res = any_platform.run(f'{ENABLE}; /selftests/guest_halted_nested_test -t 0.7; '
                           f'echo "@@off"; echo 0 > {PARAMS}/guest_halted; '
                           '/selftests/guest_halted_nested_test -n 300')
    on, off = res.output.split('@@off')
    kv_on, kv_off = parse_kv(on), parse_kv(off)
    assert kv_on.get('source') == PLATFORM_SOURCE[any_platform.platform], res.output
    gtime, halted = int(kv_on['gtime_ticks']), int(kv_on['gtime_halted_ticks'])
    assert gtime >= 50 and 0.7 * gtime <= halted <= gtime, kv_on
    assert kv_off.get('source') == 'off' and int(kv_off['gtime_halted_ticks']) == 0, kv_off
    assert int(kv_off['gtime_ticks']) >= 20, kv_off
