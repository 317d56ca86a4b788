#!/usr/bin/python3
"""Run a command in the gtime-halted test VM and return its status and output.

The VM is QEMU TCG (``-machine q35 -cpu EPYC,+svm,+npt -smp 4``) booting
build/bzImage with build/initramfs.cpio.  A per-run host directory is shared
with the guest over virtio 9p and mounted at /mnt/host; the command runs
there, so files it writes (a perf.data, say) come back to the host.

Two platforms: 'model', the QEMU that 'make qemu' builds, with its model of
APERF/MPERF switched on (the kernel then uses the mperf source), and
'stock', Debian's QEMU, which has none (the sampled source).  GH_PLATFORM
chooses the default ('model' unless set); GH_QEMU and GH_CPU override its
QEMU binary and CPU model.

The run has a hard timeout.  On a hang QEMU is killed and the result says so,
with the console output attached.

Used as a library by tests/ and scripts/demo.py, and as a command:

    scripts/vmrun.py [--timeout S] [--share DIR] [--append ARGS] -- CMD...
"""

from __future__ import annotations

import argparse
import selectors
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

TOP = Path(__file__).resolve().parent.parent
BUILD = TOP / 'build'

STOCK_QEMU = 'qemu-system-x86_64'
# Where a QEMU that is not Debian's finds the firmware Debian's installs
# (SeaBIOS, linuxboot_dma.bin).
FIRMWARE_DIRS = ('/usr/share/seabios', '/usr/share/qemu')

BEGIN_MARK = '@@GH-BEGIN@@'
RC_RE = re.compile(r'^@@GH-RC=(\d+)@@\s*$', re.M)
# A KCSAN report ('BUG: KCSAN: data-race ...') is a report, not a crash: the
# kernel runs on, and 'make kcsan-test' judges it (tests/conftest.py).
PANIC_RE = re.compile(r'Kernel panic - not syncing|BUG: (?!KCSAN: )|Oops: |'
                      r'general protection fault', re.M)


class VMError(Exception):
    """The VM could not be started (missing QEMU, kernel or initramfs)."""


# Platform: (QEMU binary, CPU model).
PLATFORMS = {
    'model': (str(BUILD / 'qemu' / 'qemu-system-x86_64'), 'EPYC,+svm,+npt,aperfmperf=on'),
    'stock': (STOCK_QEMU, 'EPYC,+svm,+npt'),
}
DEFAULT_PLATFORM = os.environ.get('GH_PLATFORM', 'model')
if DEFAULT_PLATFORM not in PLATFORMS:
    raise SystemExit(f'GH_PLATFORM={DEFAULT_PLATFORM}: want one of {", ".join(PLATFORMS)}')


@dataclass
class VMConfig:
    # GH_KERNEL boots another build of the kernel ('make debug-test').
    kernel: Path = Path(os.environ.get('GH_KERNEL', BUILD / 'bzImage'))
    initrd: Path = BUILD / 'initramfs.cpio'
    # GH_QEMU runs another QEMU, such as the APERF/MPERF model that 'make
    # qemu' builds (build/qemu/qemu-system-x86_64), and GH_CPU another CPU
    # model ('EPYC,+svm,+npt,aperfmperf=on').
    qemu: str = os.environ.get('GH_QEMU', PLATFORMS[DEFAULT_PLATFORM][0])
    cpu: str = os.environ.get('GH_CPU', PLATFORMS[DEFAULT_PLATFORM][1])
    smp: int = 4
    memory: str = '2G'
    append: str = ''
    timeout: float = 300.0


def platform_config(platform: str, cpu: str = '', **kw) -> VMConfig:
    """A VMConfig for `platform`, with another CPU model (and its
    properties) if `cpu` is given."""
    qemu, default_cpu = PLATFORMS[platform]
    if platform == DEFAULT_PLATFORM:
        qemu = os.environ.get('GH_QEMU', qemu)
        default_cpu = os.environ.get('GH_CPU', default_cpu)
    return VMConfig(qemu=qemu, cpu=cpu or default_cpu, **kw)


@dataclass
class VMResult:
    command: str
    rc: Optional[int]           # None when the command never finished
    output: str                 # what the command printed
    console: str                # the whole serial console
    hung: bool
    panicked: bool
    seconds: float
    share: Path

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def describe(self, tail: int = 80) -> str:
        """A failure report: what happened plus the console tail."""
        if self.hung:
            what = f'VM hung: no exit within the timeout ({self.seconds:.0f} s)'
        elif self.rc is None:
            what = 'VM stopped before the command reported an exit status'
        else:
            what = f'command exited {self.rc}'
        if self.panicked:
            what += ' (kernel panic/oops on the console)'
        lines = self.console.splitlines()[-tail:]
        return (f'{what}\ncommand: {self.command}\n'
                f'--- console (last {len(lines)} lines) ---\n' + '\n'.join(lines))


@dataclass
class VM:
    config: VMConfig = field(default_factory=VMConfig)

    def check(self) -> None:
        if shutil.which(self.config.qemu) is None:
            if self.config.qemu == STOCK_QEMU:
                raise VMError(f'{self.config.qemu} not found: install it with '
                              '"apt-get install qemu-system-x86" (or run "make deps")')
            if self.config.qemu == PLATFORMS['model'][0]:
                raise VMError(f'{self.config.qemu} not found: run "make qemu" to build '
                              'the APERF/MPERF model QEMU (or GH_PLATFORM=stock)')
            raise VMError(f'{self.config.qemu} (GH_QEMU) not found')
        for what, path in (('kernel', self.config.kernel), ('initramfs', self.config.initrd)):
            if not Path(path).is_file():
                raise VMError(f'{what} {path} is missing: run "make vm" first')

    def qemu_argv(self, share: Path) -> list[str]:
        c = self.config
        append = ('console=ttyS0 earlyprintk=serial,ttyS0 loglevel=4 panic=-1 oops=panic '
                  'rdinit=/init ' + c.append).strip()
        firmware = [] if c.qemu == STOCK_QEMU else \
            [a for d in FIRMWARE_DIRS if Path(d).is_dir() for a in ('-L', d)]
        return [
            c.qemu, *firmware, '-machine', 'q35', '-accel', 'tcg', '-cpu', c.cpu,
            '-smp', str(c.smp), '-m', c.memory,
            '-kernel', str(c.kernel), '-initrd', str(c.initrd), '-append', append,
            '-virtfs', f'local,path={share},mount_tag=hostshare,security_model=none,id=hs',
            '-nographic', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
            '-nodefaults',
        ]

    def run(self, command: str, share: Optional[Path] = None,
            timeout: Optional[float] = None, echo: bool = False) -> VMResult:
        """Boot, run `command` with /bin/sh in /mnt/host, power off."""
        self.check()
        if share is None:
            runs = BUILD / 'vm-runs'
            runs.mkdir(parents=True, exist_ok=True)
            share = Path(tempfile.mkdtemp(prefix='run-', dir=runs))
        share = Path(share).resolve()
        share.mkdir(parents=True, exist_ok=True)
        (share / 'cmd.sh').write_text(command + '\n')
        rc_file = share / 'rc'
        rc_file.unlink(missing_ok=True)
        timeout = timeout or self.config.timeout

        start = time.monotonic()
        console_path = share / 'console.log'
        with open(console_path, 'wb') as console_f:
            proc = subprocess.Popen(self.qemu_argv(share), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            hung = self._pump(proc, console_f, start + timeout, echo)
        seconds = time.monotonic() - start
        console = console_path.read_bytes().decode('utf-8', 'replace').replace('\r', '')

        m = RC_RE.search(console)
        rc = int(m.group(1)) if m else None
        begin = console.find(BEGIN_MARK)
        if begin >= 0:
            end = m.start() if m else len(console)
            output = console[begin + len(BEGIN_MARK):end].lstrip('\n')
        else:
            output = ''
        return VMResult(command=command, rc=rc, output=output, console=console,
                        hung=hung, panicked=bool(PANIC_RE.search(console)),
                        seconds=seconds, share=share)

    @staticmethod
    def _pump(proc: subprocess.Popen, sink, deadline: float, echo: bool) -> bool:
        """Copy QEMU's console to `sink` until it exits; kill it at `deadline`."""
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                return True
            if sel.select(timeout=min(left, 1.0)):
                data = os.read(fd, 65536)
                if not data:
                    proc.wait()
                    return False
                sink.write(data)
                sink.flush()
                if echo:
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()


# The scheduler benchmarks' switches, and the start of their guest scripts:
# a kernel without the switch is an error, accounting goes on, estimates
# are taken in (the sampled source's, on stock QEMU), and the source is
# printed for source_of().
SCHED_SWITCH = '/proc/sys/kernel/sched_guest_halted'
KVM_PARAM = '/sys/module/kvm/parameters/guest_halted'
SCHED_BENCH_PREAMBLE = f'''
[ -w {SCHED_SWITCH} ] ||
	{{ echo "@@error {SCHED_SWITCH} is missing: not a patched kernel"; exit 1; }}
echo 1 > {KVM_PARAM}
echo 1 > /proc/sys/kernel/sched_guest_halted_estimates
echo "@@source $(cat {KVM_PARAM}_source)"
'''


def source_of(output: str) -> str:
    """The source of halted time a SCHED_BENCH_PREAMBLE printed, or "?"."""
    m = re.search(r'^@@source (\S+)', output, re.M)
    return m.group(1) if m else '?'


def run_or_report(prog: str, command: str, timeout: float) -> Optional[VMResult]:
    """Run `command` in a default VM for a script: on any failure print
    "PROG: ..." with the console tail and return None.  So too if the
    command printed a line "@@error WHY": "PROG: WHY"."""
    try:
        res = VM().run(command, timeout=timeout)
    except VMError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return None
    err = re.search(r'^@@error (.*)$', res.output, re.M)
    if err:
        print(f'{prog}: {err.group(1)}', file=sys.stderr)
        return None
    if res.rc != 0:
        print(f'{prog}: failed: {res.describe()}', file=sys.stderr)
        return None
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--timeout', type=float, default=300.0, help='hard timeout in seconds')
    ap.add_argument('--share', type=Path, help='host directory shared as /mnt/host')
    ap.add_argument('--append', default='', help='extra kernel command line')
    ap.add_argument('--kernel', type=Path, default=VMConfig.kernel)
    ap.add_argument('--initrd', type=Path, default=VMConfig.initrd)
    ap.add_argument('--console', action='store_true', help='echo the console while running')
    ap.add_argument('command', nargs=argparse.REMAINDER, help='command to run in the VM')
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not cmd:
        ap.error('no command given')
    vm = VM(VMConfig(kernel=args.kernel, initrd=args.initrd, append=args.append,
                     timeout=args.timeout))
    try:
        res = vm.run(' '.join(shlex.quote(c) for c in cmd) if len(cmd) > 1 else cmd[0],
                     share=args.share, echo=args.console)
    except VMError as e:
        print(f'vmrun: error: {e}', file=sys.stderr)
        return 2
    if not args.console:
        sys.stdout.write(res.output)
    if res.rc != 0:
        print(f'vmrun: {res.describe(40)}', file=sys.stderr)
    print(f'vmrun: share {res.share}', file=sys.stderr)
    return 124 if res.hung else (res.rc if res.rc is not None else 125)


if __name__ == '__main__':
    sys.exit(main())
