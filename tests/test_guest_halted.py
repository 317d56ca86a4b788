"""Guest halted-time accounting, kernel core: the KUnit suite run in the
test kernel, and boot tests of every interface on a machine without a
source of halted time (QEMU TCG has no APERF/MPERF)."""

from __future__ import annotations

import re

from conftest import BUILD, GuestRunner, parse_kv

KUNIT_SUITE = 'kvm-x86-guest-halted'
KUNIT_SOURCE = BUILD / 'linux' / 'arch/x86/kvm/guest_halted_test.c'
PARAMS = '/sys/module/kvm/parameters'


def test_kunit_suite_passes(guest: GuestRunner) -> None:
    cases = re.findall(r'KUNIT_CASE\((\w+)\)', KUNIT_SOURCE.read_text())
    assert len(cases) >= 10
    res = guest.run('dmesg', append=f'kunit.enable=1 kunit.filter_glob={KUNIT_SUITE}')
    results = {name: (status, rest) for status, name, rest in
               re.findall(r'\b(not ok|ok) \d+ (\w[\w-]*)(.*)$', res.output, re.M)}
    for case in cases:
        assert case in results, f'KUnit case {case} did not run:\n{res.output[-3000:]}'
        status, rest = results[case]
        assert status == 'ok' and '# SKIP' not in rest, f'{case}: {status}{rest}'
    assert results.get(KUNIT_SUITE, ('missing',))[0] == 'ok'


def test_proc_stat_field_53(guest: GuestRunner) -> None:
    res = guest.run('gh-vmm halt 6 > vmm.txt & sleep 1; gh-procstat > procstat.txt; '
                    'wait; cat vmm.txt')
    vmm = parse_kv(res.output)
    vcpu_tid = vmm['tid']
    rows = [ln.split() for ln in (res.share / 'procstat.txt').read_text().splitlines()]
    assert len(rows) > 20
    seen_vcpu = False
    for pid, tid, nfields, gtime, halted in rows:
        assert nfields == '51', f'pid {pid} tid {tid}: {nfields} fields after comm, want 51'
        assert int(halted) == 0, f'pid {pid} tid {tid}: gtime_halted {halted} without a source'
        assert int(halted) <= int(gtime)
        if tid == vcpu_tid:
            seen_vcpu = True
            assert int(gtime) > 0, 'the vCPU thread should have guest time'
    assert seen_vcpu, f'vCPU thread {vcpu_tid} not in /proc'


def test_tracepoint_and_format(guest: GuestRunner) -> None:
    res = guest.run('cat /sys/kernel/tracing/events/kvm/kvm_guest_halted/format')
    fields = dict(re.findall(r'field:[\w ]*?\b(\w+);\s+offset:\d+;\s+size:(\d+);',
                             res.output))
    for name, size in (('vcpu_id', '4'), ('exit_reason', '4'), ('isa', '4'),
                       ('tsc_delta', '8'), ('mperf_delta', '8'), ('halted_cycles', '8'),
                       ('source', '4')):
        assert fields.get(name) == size, f'field {name}: {fields.get(name)}\n{res.output}'
    assert 'print fmt:' in res.output and '"mperf"' in res.output


def test_software_event_listed_and_counts(guest: GuestRunner) -> None:
    res = guest.run('perf list sw 2>&1; '
                    'perf stat -x, -o stat.csv -e guest_halted_cycles -- gh-vmm halt 1')
    assert re.search(r'guest-halted-cycles OR guest_halted_cycles\s+\[Software event\]',
                     res.output), res.output
    rows = [ln.split(',') for ln in (res.share / 'stat.csv').read_text().splitlines()
            if 'guest-halted-cycles' in ln or 'guest_halted_cycles' in ln]
    assert len(rows) == 1, (res.share / 'stat.csv').read_text()
    # No source of halted time here: the event counts, and counts zero.
    assert rows[0][0] == '0'


def test_no_source_is_reported_and_refused(guest: GuestRunner) -> None:
    res = guest.run(f'cat {PARAMS}/guest_halted {PARAMS}/guest_halted_source; '
                    f'if echo 1 > {PARAMS}/guest_halted; then echo write1=ok; '
                    'else echo write1=refused; fi; '
                    f'echo 0 > {PARAMS}/guest_halted && echo write0=ok; '
                    f'cat {PARAMS}/guest_halted; dmesg')
    lines = res.output.splitlines()
    assert lines[0:2] == ['N', 'none'], res.output
    assert 'write1=refused' in res.output and 'No such device' in res.output
    assert 'write0=ok' in res.output
    assert lines[lines.index('write0=ok') + 1] == 'N'
    assert res.output.count('MPERF clock: no APERF/MPERF') == 1
    assert res.output.count('guest halted-time accounting unavailable') == 1


def test_passthrough_guest_accounts_zero_without_source(guest: GuestRunner) -> None:
    res = guest.run('gh-vmm halt 2')
    r = parse_kv(res.output)
    assert int(r['gtime_ticks']) > 150
    assert r['gtime_halted_ticks'] == '0'
    assert r['stat_guest_halted_ns'] == '0'
