"""Shared fixtures for the gtime-halted tests.

The tests run against what 'make vm' built: build/linux (the prepared tree),
build/bzImage, build/initramfs.cpio and build/perf/perf.  In-VM tests boot
the VM through scripts/vmrun.py, the same runner 'make demo' uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / 'scripts'))

import vmrun  # noqa: E402

BUILD = TOP / 'build'
# GH_PERF: another perf build to test (a work tree's), instead of build/perf.
PERF = Path(os.environ.get('GH_PERF', BUILD / 'perf' / 'perf'))


def parse_kv(text: str) -> dict[str, str]:
    """key=value lines, as the guest programs and scripts print them."""
    return dict(m.groups() for m in re.finditer(r'^([A-Za-z_][\w.]*)=(.*?)\s*$', text, re.M))


# What the debug kernel's checkers print ('make debug-test' sets
# GH_CONSOLE_CHECK=1): lockdep, sleeping in atomic context, KASAN, UBSAN,
# and any other BUG or WARNING.
KERNEL_REPORT = re.compile(
    r'BUG: |WARNING: |UBSAN: |KASAN: |possible circular locking|'
    r'inconsistent lock state|suspicious RCU usage|sleeping function called', re.M)


# 'make kcsan-test' (GH_KCSAN_CHECK=1): a KCSAN data-race report that names
# code of the series (in its header, its stacks or its variables) fails the
# test; reports elsewhere in the kernel are logged to build/kcsan-other.log.
KCSAN_REPORT = re.compile(r'^[^\n]*BUG: KCSAN: .*?(?=^[^\n]*={20,}[^\n]*$|\Z)', re.M | re.S)
SERIES_CODE = re.compile(
    r'guest_halted|gtime_halted|halted_load|avg_halted|cpu_util_halted|'
    r'unhalted|aperfmperf|freq_tick|account_guest|sched_balance_view')


def kcsan_reports(console: str) -> tuple[list[str], list[str]]:
    """The KCSAN reports on a console: the series' own, and the others."""
    ours, others = [], []
    for m in KCSAN_REPORT.finditer(console):
        (ours if SERIES_CODE.search(m.group(0)) else others).append(m.group(0))
    return ours, others


class GuestRunner:
    """Runs commands in the test VM on one platform: 'model', the QEMU that
    models APERF/MPERF (the kernel then uses the mperf source), or 'stock',
    Debian's QEMU (the sampled source)."""

    def __init__(self, platform: str = vmrun.DEFAULT_PLATFORM) -> None:
        self.platform = platform
        self.vm = vmrun.VM(vmrun.platform_config(platform))

    def run(self, command: str, timeout: float = 240, expect_rc: int | None = 0,
            append: str = '', cpu: str = '') -> vmrun.VMResult:
        vm = self.vm
        if append or cpu:
            vm = vmrun.VM(vmrun.platform_config(self.platform, append=append, cpu=cpu))
        res = vm.run(command, timeout=timeout)
        if res.hung or res.panicked or (expect_rc is not None and res.rc != expect_rc):
            pytest.fail(f'expected exit status {expect_rc}; {res.describe()}', pytrace=False)
        if os.environ.get('GH_KCSAN_CHECK'):
            ours, others = kcsan_reports(res.console)
            if others:
                with open(BUILD / 'kcsan-other.log', 'a') as f:
                    f.write('\n'.join(others) + '\n')
            if ours:
                pytest.fail('KCSAN report in the series\' code:\n' + '\n'.join(ours)[:6000],
                            pytrace=False)
        if os.environ.get('GH_CONSOLE_CHECK') and (m := KERNEL_REPORT.search(res.console)):
            start = max(0, m.start() - 200)
            pytest.fail(f'kernel report on the console:\n{res.console[start:start + 4000]}',
                        pytrace=False)
        return res


def _runner(platform: str) -> GuestRunner:
    missing = [p for p in (BUILD / 'bzImage', BUILD / 'initramfs.cpio', PERF) if not p.exists()]
    if missing:
        pytest.fail('missing build outputs (run "make vm"): '
                    + ', '.join(str(p.relative_to(TOP)) for p in missing))
    runner = GuestRunner(platform)
    try:
        runner.vm.check()
    except vmrun.VMError as e:
        pytest.fail(str(e))
    return runner


@pytest.fixture(scope='session')
def guest() -> GuestRunner:
    """The default platform (GH_PLATFORM, 'model' unless set to 'stock')."""
    return _runner(vmrun.DEFAULT_PLATFORM)


@pytest.fixture(scope='session')
def model() -> GuestRunner:
    """The APERF/MPERF model, for tests of the mperf source."""
    if vmrun.DEFAULT_PLATFORM == 'stock':
        pytest.skip('GH_PLATFORM=stock: no APERF/MPERF model to test the mperf source on')
    return _runner('model')


@pytest.fixture(scope='session')
def stock() -> GuestRunner:
    """Debian's QEMU, without APERF/MPERF: the sampled source."""
    return _runner('stock')


MODEL_CPU = vmrun.PLATFORMS['model'][1]


def host_perf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PERF), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
