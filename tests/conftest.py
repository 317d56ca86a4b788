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


class GuestRunner:
    def __init__(self) -> None:
        self.vm = vmrun.VM()

    def run(self, command: str, timeout: float = 240, expect_rc: int | None = 0,
            append: str = '') -> vmrun.VMResult:
        vm = self.vm
        if append:
            vm = vmrun.VM(vmrun.VMConfig(append=append))
        res = vm.run(command, timeout=timeout)
        if res.hung or res.panicked or (expect_rc is not None and res.rc != expect_rc):
            pytest.fail(f'expected exit status {expect_rc}; {res.describe()}', pytrace=False)
        if os.environ.get('GH_CONSOLE_CHECK') and (m := KERNEL_REPORT.search(res.console)):
            start = max(0, m.start() - 200)
            pytest.fail(f'kernel report on the console:\n{res.console[start:start + 4000]}',
                        pytrace=False)
        return res


@pytest.fixture(scope='session')
def guest() -> GuestRunner:
    missing = [p for p in (BUILD / 'bzImage', BUILD / 'initramfs.cpio', PERF) if not p.exists()]
    if missing:
        pytest.fail('missing build outputs (run "make vm"): '
                    + ', '.join(str(p.relative_to(TOP)) for p in missing))
    return GuestRunner()


def host_perf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PERF), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
