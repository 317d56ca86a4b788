"""The test VM: boot, nested KVM, exit counting through kvm:kvm_exit, and
perf kvm stat recorded in the guest and reported on the host."""

from __future__ import annotations

import re

import pytest

import vmrun
from conftest import GuestRunner, host_perf, parse_kv

SVM_EXIT_IOIO = 0x7b


def test_boots_with_nested_kvm(guest: GuestRunner) -> None:
    res = guest.run('gh-sysinfo')
    info = parse_kv(res.output)
    assert info.get('nproc') == '4', res.output
    assert info.get('dev_kvm') == 'yes'
    assert info.get('cpu_svm') == 'yes'
    assert info.get('kvm_amd_npt') in ('1', 'Y'), res.output
    assert info.get('kvm_amd_nested') in ('1', 'Y'), res.output
    assert info.get('tp_kvm_exit') == 'yes'


def test_exit_status_and_files_come_back(guest: GuestRunner) -> None:
    res = guest.run('echo hello > out.txt; uname -r; exit 7', expect_rc=7)
    assert (res.share / 'out.txt').read_text() == 'hello\n'
    assert re.search(r'^6\.12\.\d+', res.output, re.M), res.output


def test_hang_is_reported_with_console(guest: GuestRunner) -> None:
    res = guest.vm.run('echo about-to-hang; sleep 600', timeout=30)
    assert res.hung and res.rc is None
    report = res.describe()
    assert 'VM hung' in report and 'about-to-hang' in report


def test_missing_qemu_is_a_clear_error(tmp_path, monkeypatch) -> None:
    vm = vmrun.VM(vmrun.VMConfig(qemu='qemu-system-x86_64-not-installed'))
    with pytest.raises(vmrun.VMError, match=r'^qemu-system-x86_64-not-installed \(GH_QEMU\) '
                       'not found$'):
        vm.run('true')
    # The model QEMU not built yet: say how to build it.
    model = str(tmp_path / 'qemu-system-x86_64')
    monkeypatch.setitem(vmrun.PLATFORMS, 'model', (model, vmrun.PLATFORMS['model'][1]))
    with pytest.raises(vmrun.VMError, match='run "make qemu"'):
        vmrun.VM(vmrun.VMConfig(qemu=model)).run('true')
    # Debian's QEMU missing: say which package has it.
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(vmrun.VMError, match='apt-get install qemu-system-x86'):
        vmrun.VM(vmrun.VMConfig(qemu=vmrun.STOCK_QEMU)).run('true')


def test_nested_guest_exits_counted_by_tracepoint(guest: GuestRunner) -> None:
    n = 2000
    res = guest.run('perf stat -x, -o stat.csv -e kvm:kvm_exit '
                    f"--filter 'exit_reason == {SVM_EXIT_IOIO}' -e kvm:kvm_exit "
                    f'-- gh-vmm exits {n}; cat stat.csv')
    vmm = parse_kv(res.output)
    assert int(vmm['io_exits']) == n
    counts = [int(ln.split(',')[0]) for ln in (res.share / 'stat.csv').read_text().splitlines()
              if ',kvm:kvm_exit' in ln]
    assert len(counts) == 2, res.output
    io_counted, all_counted = counts
    # The guest's N outs, plus the one that tells gh-vmm it is done.
    assert io_counted == n + 1, f'kvm:kvm_exit on IOIO counted {io_counted}, guest did {n} + 1'
    # Every other exit is a host interrupt or a nested page fault: a handful.
    assert n < all_counted < n + 200


def test_perf_kvm_stat_record_in_guest_report_on_host(guest: GuestRunner) -> None:
    n = 1500
    res = guest.run(f'perf kvm stat record -q -o perf.data -a -- gh-vmm exits {n}')
    assert int(parse_kv(res.output)['io_exits']) == n
    data = res.share / 'perf.data'
    assert data.stat().st_size > 0
    rep = host_perf('kvm', '-i', str(data), 'stat', 'report', '--event=vmexit')
    # perf kvm stat report prints its table with pr_info(), on stderr.
    text = rep.stdout + rep.stderr
    assert rep.returncode == 0, text
    rows = {m.group(1): int(m.group(2))
            for m in re.finditer(r'^\s*(\S+)\s+(\d+)\s+[\d.]+%', text, re.M)}
    # The N outs plus the final one; the final exit has no entry after it
    # and perf kvm stat pairs exits with entries, so it is not counted.
    assert rows.get('io') == n, text
    total = int(re.search(r'Total Samples:(\d+)', text).group(1))
    assert total == sum(rows.values()), text


def test_halted_guest_counts_as_busy_without_the_feature(guest: GuestRunner) -> None:
    """The problem itself: a vCPU whose guest only halts accrues full gtime."""
    res = guest.run('gh-vmm halt 2')
    r = parse_kv(res.output)
    wall, hz = float(r['wall_s']), int(r['clk_tck'])
    assert wall >= 1.9
    gtime_fraction = int(r['gtime_ticks']) / hz / wall
    assert gtime_fraction > 0.85, res.output
