"""Guest halted-time accounting: the KUnit suites run in the test kernel,
boot tests of every interface, and the end-to-end selftest against the
guest's own ground truth.  QEMU TCG has no APERF/MPERF, so the kernel here
uses the sampled source."""

from __future__ import annotations

import re

from conftest import BUILD, GuestRunner, parse_kv

KUNIT_SUITES = {
    'kvm-x86-guest-halted': BUILD / 'linux' / 'arch/x86/kvm/guest_halted_test.c',
    'proc-array': BUILD / 'linux' / 'fs/proc/array_kunit.c',
}
PARAMS = '/sys/module/kvm/parameters'
ENABLE = f'echo 1 > {PARAMS}/guest_halted'
SELFTEST_LINE = re.compile(
    r'^(passthrough|no passthrough|accounting off), (\d+)% duty: guest ([\d.]+)% halted, '
    r'host ([\d.]+)% halted \(error ([-+][\d.]+) pp\)', re.M)


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
            assert status == 'ok' and '# SKIP' not in rest, f'{suite}.{case}: {status}{rest}'
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
    res = guest.run('cat /sys/kernel/tracing/events/kvm/kvm_guest_halted/format')
    fields = dict(re.findall(r'field:[\w ]*?\b(\w+);\s+offset:\d+;\s+size:(\d+);',
                             res.output))
    for name, size in (('vcpu_id', '4'), ('exit_reason', '4'), ('isa', '4'),
                       ('tsc_delta', '8'), ('mperf_delta', '8'), ('halted_cycles', '8'),
                       ('source', '4')):
        assert fields.get(name) == size, f'field {name}: {fields.get(name)}\n{res.output}'
    assert 'print fmt:' in res.output
    assert '"mperf"' in res.output and '"sampled"' in res.output


def test_software_event_listed_and_counts(guest: GuestRunner) -> None:
    res = guest.run(f'perf list sw 2>&1; {ENABLE}; '
                    'perf stat -x, -o stat.csv -e guest_halted_cycles -- gh-vmm halt 2; '
                    'perf record -q -e guest_halted_cycles -c 100000000 -o rec.data '
                    '-- gh-vmm halt 1 > /dev/null; '
                    'perf script -i rec.data -F comm,tid,event,period > script.txt')
    assert re.search(r'guest-halted-cycles OR guest_halted_cycles\s+\[Software event\]',
                     res.output), res.output
    rows = [ln.split(',') for ln in (res.share / 'stat.csv').read_text().splitlines()
            if 'guest-halted-cycles' in ln or 'guest_halted_cycles' in ln]
    assert len(rows) == 1, (res.share / 'stat.csv').read_text()
    vmm = parse_kv(res.output)
    # The event counts the cycles that the vCPU statistic counts in ns.
    want = int(vmm['stat_guest_halted_ns']) * int(vmm['tsc_khz']) / 1e6
    assert want > 0 and abs(int(rows[0][0]) - want) <= 0.01 * want, (rows[0], vmm)
    # perf record samples it: one sample per 1e8 halted cycles, on the vCPU thread.
    samples = (res.share / 'script.txt').read_text().splitlines()
    assert len(samples) >= 3, samples
    assert all('guest_halted_cycles' in ln or 'guest-halted-cycles' in ln for ln in samples), \
        samples[:5]


def test_source_and_parameters(guest: GuestRunner) -> None:
    res = guest.run(f'cat {PARAMS}/guest_halted {PARAMS}/guest_halted_source; '
                    f'echo mperf > {PARAMS}/guest_halted_source || echo mperf=refused; '
                    f'echo bogus > {PARAMS}/guest_halted_source || echo bogus=refused; '
                    f'echo source=$(cat {PARAMS}/guest_halted_source); '
                    f'{ENABLE} && echo on=$(cat {PARAMS}/guest_halted); '
                    f'echo 0 > {PARAMS}/guest_halted && echo off=$(cat {PARAMS}/guest_halted); '
                    'dmesg')
    lines = res.output.splitlines()
    assert lines[0:2] == ['N', 'sampled'], res.output
    # No APERF/MPERF here: forcing mperf is refused rather than faked.
    assert 'mperf=refused' in res.output and 'No such device' in res.output
    assert 'bogus=refused' in res.output and 'Invalid argument' in res.output
    kv = parse_kv(res.output)
    assert (kv['source'], kv['on'], kv['off']) == ('sampled', 'Y', 'N'), kv
    assert res.output.count('MPERF clock: no APERF/MPERF') == 1
    assert res.output.count('no usable APERF/MPERF, using the sampled source') == 1


def test_switched_off_accounts_zero(guest: GuestRunner) -> None:
    res = guest.run('gh-vmm halt 2')
    r = parse_kv(res.output)
    assert int(r['gtime_ticks']) > 150
    assert r['gtime_halted_ticks'] == '0'
    assert r['stat_guest_halted_ns'] == '0'


def test_halted_fraction_matches_guest_ground_truth(guest: GuestRunner) -> None:
    """x86_64/guest_halted_test: the host's four numbers agree, and match the
    guest's own RDTSC measurement within 5 points at each duty cycle."""
    res = guest.run('/selftests/guest_halted_test', timeout=300)
    rows = SELFTEST_LINE.findall(res.output)
    by_kind: dict[str, list] = {}
    for kind, duty, guest_pct, host_pct, err in rows:
        by_kind.setdefault(kind, []).append((int(duty), float(guest_pct), float(host_pct),
                                             float(err)))
    assert [d for d, *_ in by_kind.get('passthrough', [])] == [0, 50, 90, 100], res.output
    for duty, guest_pct, host_pct, err in by_kind['passthrough']:
        # The guest ran the duty cycle it was asked for...
        assert abs(guest_pct - duty) <= 10, (duty, guest_pct)
        # ...and the host saw it.
        assert abs(err) <= 5 and abs(host_pct - guest_pct - err) <= 0.11, (duty, host_pct, err)
    for kind in ('no passthrough', 'accounting off'):
        assert len(by_kind.get(kind, [])) == 4, res.output
        assert all(host_pct == 0 for _, _, host_pct, _ in by_kind[kind]), by_kind[kind]
