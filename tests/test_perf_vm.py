"""'perf kvm stat halted' end to end in the test VM.

One boot records the selftest guest_halted_test (guests at known duty
cycles) under 'perf kvm stat record --event=halted' (kvm:guest_halted
only: tracing every exit too would slow the guest's exits and skew its own
measurement), reports it in the guest, runs
Debian's trace-cmd with the kvm:guest_halted plugin, the perf shell test
tools/perf/tests/shell/kvm_stat_halted.sh, and 'perf kvm stat halted' live.
The recording comes back to the host, where the report's per-vCPU sums must
equal a hand count of the raw fields from 'perf script' exactly, CSV, JSON
and table must agree, and the halted fraction must match the selftest's own
figures.  A second boot, of the unpatched kernel (build/bzImage-base, from
'make kernel-base'), checks that record and live refuse --event=halted
there with a one-line error, and that plain record still works.

GH_KERNEL, GH_BASE_KERNEL and GH_INITRD override the VM's kernels and
initramfs (a work tree's builds).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import vmrun
from conftest import BUILD, parse_kv
from test_perf_kvm_stat import csv_rows, hand_count, nums, perf

KERNEL = Path(os.environ.get('GH_KERNEL', BUILD / 'bzImage'))
BASE_KERNEL = Path(os.environ.get('GH_BASE_KERNEL', BUILD / 'bzImage-base'))
INITRD = Path(os.environ.get('GH_INITRD', BUILD / 'initramfs.cpio'))
PLUGINS = '/usr/local/lib/traceevent/plugins'
SELFTEST_LINE = re.compile(
    r'^passthrough, (\d+)% duty: guest ([\d.]+)% halted, host ([\d.]+)% halted '
    r'\(error [-+][\d.]+ pp[^)]*\); gtime (\d+) ticks, gtime_halted \d+ ticks, '
    r'(?:\d+ intervals, )?guest_halted_ns (\d+)', re.M)

GUEST_SCRIPT = f'''
P=/sys/module/kvm/parameters
echo 1 > $P/guest_halted
echo kernel_source=$(cat $P/guest_halted_source)
perf kvm -o rec.data stat record --event=halted -a -- /selftests/guest_halted_test \
	> selftest.txt 2>&1
echo selftest_rc=$?
perf kvm -i rec.data stat halted -x, > guest.csv 2> guest.err
echo guest_report_rc=$?
echo 1 > $P/guest_halted
perf kvm -o all.data stat record -a -- gh-vmm halt 2 > /dev/null 2>&1
echo all_rc=$?
trace-cmd record -q -e kvm:guest_halted -o trace.dat gh-vmm halt 2 > /dev/null 2> tc-record.err
echo tc_record_rc=$?
TRACEEVENT_PLUGIN_DIR={PLUGINS} trace-cmd report -i trace.dat > tc.txt 2> tc.err
echo tc_report_rc=$?
KVM_HALTED_TEST_WORKLOAD="gh-vmm halt 2" sh /tests/perf-kvm-stat-halted.sh > shell.txt 2>&1
echo shell_rc=$?
gh-vmm halt 12 > /dev/null &
sleep 1
timeout -s INT -k 10 8 perf kvm stat live --event=halted -a -I 500 -x, > live.csv 2> live.err < /dev/null
echo live_rc=$?
wait
gh-vmm halt 9 > /dev/null &
sleep 1
r=; for i in 1 2 3 4 5; do
  timeout -s INT -k 3 1 perf kvm stat live --event=halted -a > /dev/null 2>&1 < /dev/null; r="$r$?,"
done
echo live_stop_rcs=$r
wait
'''

BASE_SCRIPT = '''
perf kvm -o rec.data stat record --event=halted -a sleep 1 > rec-halted.out 2>&1
echo rec_halted_rc=$?
perf kvm -o plain.data stat record -a sleep 1 > /dev/null 2>&1
echo rec_rc=$?
perf kvm -i plain.data stat halted > report.out 2>&1
echo report_rc=$?
timeout 10 perf kvm stat live --event=halted -a > live.out 2>&1
echo live_rc=$?
'''


def _vm(kernel: Path) -> vmrun.VM:
    for p in (kernel, INITRD):
        if not p.exists():
            pytest.fail(f'{p} is missing (run "make vm")')
    return vmrun.VM(vmrun.VMConfig(kernel=kernel, initrd=INITRD))


@pytest.fixture(scope='module')
def run() -> vmrun.VMResult:
    res = _vm(KERNEL).run(GUEST_SCRIPT, timeout=600)
    if res.hung or res.panicked or res.rc != 0:
        pytest.fail(res.describe(), pytrace=False)
    return res


def expected_source(run) -> str:
    """The source the kernel picked: mperf on the model QEMU, sampled on
    Debian's (no APERF/MPERF); what perf must report."""
    src = parse_kv(run.output)['kernel_source']
    if 'GH_QEMU' not in os.environ and 'GH_CPU' not in os.environ:
        assert src == {'model': 'mperf', 'stock': 'sampled'}[vmrun.DEFAULT_PLATFORM], src
    return src


def test_record_ran(run) -> None:
    # Whether the selftest's own guest and host figures agree is
    # test_guest_halted.py's business; here it is the workload.
    out = (run.share / 'selftest.txt').read_text()
    assert 'perf record: Captured and wrote' in out, out[-3000:]
    assert SELFTEST_LINE.search(out), out[-3000:]


def test_report_equals_hand_count_of_perf_script(run) -> None:
    """The report's per-vCPU guest and halted totals equal, exactly, the
    sums of the raw kvm:guest_halted fields that 'perf script' prints."""
    data = run.share / 'rec.data'
    by_hand = hand_count(data)
    assert by_hand, 'no kvm:guest_halted events in the recording'
    res = perf('kvm', '-i', str(data), 'stat', 'halted', '-x,')
    assert res.returncode == 0, res.stderr
    rows = csv_rows(res.stdout)
    vcpus = {(int(r['pid']), int(r['vcpu'])): nums(r) for r in rows if r['row'] == 'vcpu'}
    assert vcpus == by_hand
    # The guest's perf reported the same file identically.
    assert (run.share / 'guest.csv').read_text() == res.stdout, \
        (run.share / 'guest.err').read_text()


def test_csv_json_and_table_agree(run) -> None:
    data = run.share / 'rec.data'
    rows = csv_rows(perf('kvm', '-i', str(data), 'stat', 'halted', '-x,').stdout)
    objs = [json.loads(ln) for ln in
            perf('kvm', '-i', str(data), 'stat', 'halted', '--json').stdout.splitlines()]
    table = perf('kvm', '-i', str(data), 'stat', 'halted').stdout
    assert len(rows) == len(objs) >= 3
    for r, o in zip(rows, objs):
        assert (o['row'], o['guest_ns'], o['halted_ns'], o['samples'], o['source']) == \
            (r['row'], int(r['guest_ns']), int(r['halted_ns']), int(r['samples']), r['source'])
        assert float(r['halted_pct']) == o['halted_pct']
        assert f'{int(r["guest_ns"]) / 1e9:.6f}' in table
    # Every row carries the kernel's source; an estimate (sampled, on a
    # QEMU without APERF/MPERF) has a standard error and a "~" in the
    # table, an exact figure (mperf) neither.
    src = expected_source(run)
    assert all(r['source'] == src for r in rows), rows
    if src == 'sampled':
        assert all(r['stderr_pp'] for r in rows) and '~' in table, (rows, table)
    else:
        assert not any(r['stderr_pp'] for r in rows) and '~' not in table, (rows, table)
        assert all('stderr_pp' not in o for o in objs), objs


def test_halted_fraction_matches_the_selftest(run) -> None:
    """The selftest's guests ran known duty cycles; over its run, perf's
    halted % of vCPU 0 matches the selftest's figures, weighted by guest
    time, within the selftest's tolerance: the host's always, and the
    guest's own (RDTSC) when the selftest found them in agreement."""
    out = (run.share / 'selftest.txt').read_text()
    tol = float(re.search(r'tolerance: ([\d.]+) percentage points', out)[1])
    phases = [(int(d), float(g), float(h), int(t), int(ns))
              for d, g, h, t, ns in SELFTEST_LINE.findall(out)]
    assert phases and [p[0] for p in phases] == [0, 50, 90, 100][:len(phases)], out[-2000:]
    ticks = sum(p[3] for p in phases)
    guest_pct = sum(p[1] * p[3] for p in phases) / ticks
    host_pct = sum(p[2] * p[3] for p in phases) / ticks
    rows = csv_rows(perf('kvm', '-i', str(run.share / 'rec.data'), 'stat', 'halted',
                         '-x,').stdout)
    vcpu0 = [r for r in rows if r['row'] == 'vcpu' and r['vcpu'] == '0']
    assert len(vcpu0) == 1, rows      # one selftest process, one vCPU id
    perf_pct = 100 * int(vcpu0[0]['halted_ns']) / int(vcpu0[0]['guest_ns'])
    assert abs(perf_pct - host_pct) <= tol, (perf_pct, host_pct, tol)
    if parse_kv(run.output)['selftest_rc'] == '0':
        assert len(phases) == 4
        assert abs(perf_pct - guest_pct) <= tol, (perf_pct, guest_pct, tol)
    # perf's halted time covers the selftest's passthrough phases.
    assert int(vcpu0[0]['halted_ns']) >= 0.95 * sum(p[4] for p in phases)


def test_plain_record_includes_guest_halted(run) -> None:
    """'perf kvm stat record' without --event records kvm:guest_halted
    beside the other kvm events, so one file serves every class."""
    assert parse_kv(run.output)['all_rc'] == '0'
    data = run.share / 'all.data'
    res = perf('script', '-i', str(data), '-F', 'event')
    events = {ln.strip().rstrip(':') for ln in res.stdout.splitlines()}
    assert {'kvm:guest_halted', 'kvm:kvm_exit', 'kvm:kvm_entry'} <= events, events
    for cls in ('halted', 'vmexit'):
        res = perf('kvm', '-i', str(data), 'stat', 'report', f'--event={cls}', '--stdio')
        assert res.returncode == 0, (cls, res.stderr)
    assert 'gh-vmm' in perf('kvm', '-i', str(data), 'stat', 'halted').stdout
    # Among the other events, the halted class counts its own and no more.
    by_hand = hand_count(data)
    assert by_hand, 'no kvm:guest_halted events in the recording'
    rows = csv_rows(perf('kvm', '-i', str(data), 'stat', 'halted', '-x,').stdout)
    assert {(int(r['pid']), int(r['vcpu'])): nums(r)
            for r in rows if r['row'] == 'vcpu'} == by_hand


def test_trace_cmd_report_with_the_plugin(run) -> None:
    kv = parse_kv(run.output)
    assert kv['tc_record_rc'] == '0', (run.share / 'tc-record.err').read_text()
    assert kv['tc_report_rc'] == '0', (run.share / 'tc.err').read_text()
    lines = [ln for ln in (run.share / 'tc.txt').read_text().splitlines()
             if 'guest_halted:' in ln]
    assert len(lines) >= 50, (run.share / 'tc.txt').read_text()[-2000:]
    src = expected_source(run)
    mark = ', estimate' if src == 'sampled' else ''
    for ln in lines[:20]:
        # The plugin's guest ms and halted % (marked when an estimate),
        # then the kernel's own format, with the exit reason by name.
        assert re.search(r'\([\d.]+ ms guest, [\d.]+% halted' + mark + r'\) vcpu \d+ '
                         r'reason [a-zA-Z_]\w* gtime_ns \d+ halted_ns \d+ ', ln), ln
        assert ln.endswith(f' source {src}'), ln


def test_perf_shell_test_passes(run) -> None:
    kv = parse_kv(run.output)
    assert kv['shell_rc'] == '0', (run.share / 'shell.txt').read_text()


def test_live_interval(run) -> None:
    """Live, -I 500 as CSV, stopped by SIGINT after 8 s with stdin at its
    end (/dev/null): a normal end, exit status 0, the last interval
    reported partial with its true end."""
    text = (run.share / 'live.csv').read_text()
    lines = text.splitlines()
    assert lines and lines[0].startswith('# time,row,pid'), \
        text + (run.share / 'live.err').read_text()
    assert parse_kv(run.output)['live_rc'] == '0', text + (run.share / 'live.err').read_text()
    rows = csv_rows(text)
    assert len(rows) >= 2 and all(r['row'] == 'vcpu' for r in rows), text
    assert all(r['comm'] == 'gh-vmm' for r in rows), text
    # The guest only halts.
    assert all(float(r['halted_pct']) >= 80 for r in rows), text
    # Stopped at 8 s: no interval ends after that (the VMM runs 11 s more).
    assert 7 <= float(rows[-1]['time']) < 9, text


def test_live_stops_on_sigint_whatever_stdin_holds(run) -> None:
    """SIGINT at any point of live mode's loop stops it, with stdin at its
    end: five runs of 1 s, each must exit 0 by itself (was: the loop's
    read of stdin overwrote the signal's stop, so perf spun until killed,
    137, or exited 1 without its last report)."""
    rcs = parse_kv(run.output)['live_stop_rcs'].rstrip(',').split(',')
    assert rcs == ['0'] * 5, rcs


def test_kernel_without_the_feature() -> None:
    if not BASE_KERNEL.exists():
        pytest.skip(f'{BASE_KERNEL} is missing (make kernel-base)')
    res = _vm(BASE_KERNEL).run(BASE_SCRIPT, timeout=300)
    if res.hung or res.panicked or res.rc != 0:
        pytest.fail(res.describe(), pytrace=False)
    kv = parse_kv(res.output)
    assert kv['rec_rc'] == '0', 'plain perf kvm stat record must still work'
    for name, out in (('rec_halted', 'rec-halted.out'), ('report', 'report.out'),
                      ('live', 'live.out')):
        text = (res.share / out).read_text()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith('Hint: ')]
        assert kv[f'{name}_rc'] not in ('0', '124') and len(lines) == 1, (name, text)
        assert 'kvm:guest_halted' in lines[0], (name, text)
