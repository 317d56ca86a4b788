"""The APERF/MPERF model QEMU that 'make qemu' builds (qemu/README.md): the
build's stamp, the model's parameter checks, and what the guest (L1) sees of
it: the CPUID bits with the model off and on, MPERF and APERF counting while
a CPU spins and stopping while it idles, their rates, and the kernel's
MPERF/TSC calibration at two rates and with a jittering MPERF.

Every figure here is measured on a model of the counters under QEMU TCG,
not on hardware.  The nested case (an L2 HLT stops L1's MPERF) is in
test_mperf.py, with the kernel's mperf source."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

import vmrun
from conftest import BUILD, TOP, parse_kv

MODEL_QEMU = BUILD / 'qemu' / 'qemu-system-x86_64'
STAMP = BUILD / 'qemu' / '.stamp'
BASE_CPU = 'EPYC,+svm,+npt'
MODEL_CPU = f'{BASE_CPU},aperfmperf=on'

MSR_TSC, MSR_MPERF, MSR_APERF = 0x10, 0xe7, 0xe8
CAL_RE = re.compile(r'MPERF: (\d+\.\d+) TSC cycles per MPERF cycle')
PARAMS = '/sys/module/kvm/parameters'

# In-guest shell.  rdmsr CPU MSR: one read through /dev/cpu/N/msr (RDMSR on
# that CPU; busybox dd reads one 8-byte value at the MSR's byte offset).
# sample CPU MS: gh-msr (tests/guest/gh-msr.c) reads MPERF and the TSC of
# CPU back to back, MS milliseconds apart, and prints their deltas.
MSR_SH = r'''
rdmsr() { dd if=/dev/cpu/$1/msr bs=8 count=1 skip=$2 iflag=skip_bytes 2>/dev/null |
	od -A n -t u8 | tr -d ' '; }
sample() { gh-msr $1 $2 | tr '\n' ' '; }
mhz() { awk -v cpu=$1 '/^processor/ { p = $3 } /^cpu MHz/ && p == cpu { print $4 }' /proc/cpuinfo; }
spin() { taskset -c $1 sh -c 'while :; do :; done' & }
'''


def _model_vm(cpu: str) -> vmrun.VM:
    return vmrun.VM(vmrun.VMConfig(qemu=str(MODEL_QEMU), cpu=cpu))


@pytest.fixture(scope='module')
def model_binary() -> Path:
    if not MODEL_QEMU.is_file():
        pytest.fail(f'{MODEL_QEMU.relative_to(TOP)} is missing: run "make qemu"')
    return MODEL_QEMU


@pytest.fixture(scope='module')
def run_model(model_binary: Path):
    missing = [p for p in (BUILD / 'bzImage', BUILD / 'initramfs.cpio') if not p.exists()]
    if missing:
        pytest.fail('missing build outputs (run "make vm"): '
                    + ', '.join(str(p.relative_to(TOP)) for p in missing))

    def run(command: str, cpu: str = MODEL_CPU, qemu: str | None = None,
            timeout: float = 240) -> vmrun.VMResult:
        vm = vmrun.VM(vmrun.VMConfig(qemu=qemu, cpu=cpu)) if qemu else _model_vm(cpu)
        res = vm.run(MSR_SH + command, timeout=timeout)
        if res.hung or res.panicked or res.rc != 0:
            pytest.fail(f'{res.describe()}', pytrace=False)
        return res
    return run


def _samples(output: str, tag: str) -> dict[str, float]:
    """The key=value pairs of the output line that starts with `tag`."""
    m = re.search(rf'^{tag} (.*)$', output, re.M)
    assert m, f'no "{tag}" line in:\n{output}'
    return {k: float(v) for k, v in parse_kv(m.group(1).replace(' ', '\n')).items()}


def _flags(output: str) -> set[str]:
    m = re.search(r'^flags\s*:\s*(.*)$', output, re.M)
    assert m, output
    return set(m.group(1).split())


def test_build_stamp_names_the_current_patches(model_binary: Path) -> None:
    """build/qemu/.stamp records the series and patches the binary was built
    from; make qemu rebuilds when they change, so they must match here."""
    series = (TOP / 'qemu' / 'series').read_text()
    names = [ln for ln in series.splitlines() if ln and not ln.startswith('#')]
    assert names, 'qemu/series names no patch'
    h = hashlib.sha256(series.encode())
    for name in names:
        patch = (TOP / 'qemu' / name).read_text()
        assert re.search(r'^Subject: \[PATCH[^\]]*\] target/i386: ', patch, re.M), name
        assert 'gtime-halted test infrastructure, not for upstream' in patch, name
        h.update(patch.encode())
    stamp = dict(ln.split('=', 1) for ln in STAMP.read_text().split())
    assert stamp['patches'] == h.hexdigest(), \
        'build/qemu was built from other patches: run "make qemu"'
    assert stamp['version'].startswith('1:7.2+dfsg-'), stamp


@pytest.mark.parametrize('props, error', [
    ('mperf-permille=50', 'mperf-permille and aperf-permille must be within 100..10000'),
    ('aperf-permille=20000', 'mperf-permille and aperf-permille must be within 100..10000'),
    ('mperf-jitter=1000', 'mperf-jitter must be below mperf-permille'),
])
def test_bad_model_parameters_are_refused(model_binary: Path, props: str, error: str) -> None:
    res = subprocess.run([str(model_binary), '-machine', 'q35', '-accel', 'tcg',
                          '-cpu', f'{MODEL_CPU},{props}', '-nodefaults', '-display', 'none',
                          '-L', '/usr/share/seabios', '-L', '/usr/share/qemu'],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and error in res.stderr, res.stderr


def test_model_off_is_the_stock_cpu(run_model) -> None:
    """Without aperfmperf=on the model binary shows the guest the same CPU
    as Debian's QEMU: the same flags, no APERF/MPERF, MPERF reads 0."""
    cmd = 'grep -m1 ^flags /proc/cpuinfo'
    stock = run_model(cmd, cpu=BASE_CPU, qemu=vmrun.STOCK_QEMU)
    model = run_model(cmd + '; echo "off $(sample 1 200) aperf=$(rdmsr 1 232)"', cpu=BASE_CPU)
    assert _flags(model.output) == _flags(stock.output)
    assert not {'aperfmperf', 'constant_tsc', 'nonstop_tsc'} & _flags(model.output)
    off = _samples(model.output, 'off')
    assert off['mperf_delta'] == 0 and off['aperf'] == 0, off
    # RDMSR of the TSC (qemu/0002) works with the model off too.
    assert off['tsc_delta'] > 0, off


def test_counters_run_while_spinning_and_stop_while_idle(run_model) -> None:
    """CPU 1 spins, CPU 3 idles (HLT): MPERF runs at the TSC rate on the
    first and all but stops on the second.  APERF runs at aperf-permille
    of MPERF: the kernel's tick reads both, and /proc/cpuinfo's MHz of the
    spinning CPU is the TSC frequency times APERF/MPERF."""
    res = run_model('grep -m1 ^flags /proc/cpuinfo; dmesg | grep "tsc: Detected"; '
                    'spin 1; pid=$!; sleep 0.5; echo "spin $(sample 1 1000) mhz=$(mhz 1)"; '
                    'kill $pid; echo "idle $(sample 3 1000)"',
                    cpu=f'{MODEL_CPU},aperf-permille=500')
    flags = _flags(res.output)
    # monitor and arat: what KVM needs to pass MWAIT through.
    assert {'aperfmperf', 'constant_tsc', 'nonstop_tsc', 'monitor', 'arat'} <= flags, flags
    spin, idle = _samples(res.output, 'spin'), _samples(res.output, 'idle')
    # Each read is an IPI to the CPU: the two reads of a pair are some
    # microseconds apart, more when the host preempts QEMU in between.
    assert 0.97 <= spin['mperf_per_tsc'] <= 1.02, spin
    # The idle CPU runs only for its interrupts and the reads' own IPIs.
    assert idle['mperf_per_tsc'] < 0.05, idle
    tsc_mhz = float(re.search(r'tsc: Detected ([\d.]+) MHz', res.output).group(1))
    assert abs(spin['mhz'] / tsc_mhz - 0.5) < 0.01, (spin, tsc_mhz)


@pytest.mark.parametrize('permille', [1000, 800])
def test_kernel_calibrates_the_model_rate(run_model, permille: int) -> None:
    """The series' calibration measures TSC cycles per MPERF cycle: 1 at the
    default rate, 1/0.8 = 1.25 with mperf-permille=800, and the counters
    read directly agree."""
    res = run_model(f'test -e {PARAMS}/guest_halted_source && echo source_param=yes; '
                    f'echo 1 > {PARAMS}/guest_halted; dmesg | grep -e MPERF: -e "guest halted"; '
                    'spin 2; pid=$!; sleep 0.3; echo "spin $(sample 2 1000)"; kill $pid',
                    cpu=f'{MODEL_CPU},mperf-permille={permille}')
    assert 'source_param=yes' in res.output, res.output
    found = CAL_RE.findall(res.output)
    assert len(found) == 1, res.output
    want = 1000 / permille
    assert abs(float(found[0]) - want) < 0.005 * want, (found, want)
    rate = _samples(res.output, 'spin')['mperf_per_tsc']
    assert permille / 1000 * 0.97 <= rate <= permille / 1000 * 1.02, (rate, permille)


def test_jittering_mperf_fails_calibration(run_model) -> None:
    """mperf-jitter=100 gives each interval between two reads an MPERF rate
    up to 10% off, so the calibration's three 1 ms runs cannot agree within
    1%; over a second (many intervals: the tick reads MPERF too) the rate
    still averages about 1, and the counter never goes back."""
    res = run_model(f'echo 1 > {PARAMS}/guest_halted 2>/dev/null; dmesg | grep MPERF:; '
                    'spin 2; pid=$!; sleep 0.3; echo "spin $(sample 2 1000)"; '
                    'echo "reads $(for i in 1 2 3 4 5 6 7 8; do rdmsr 2 231; done | tr "\\n" " ")"; '
                    'kill $pid',
                    cpu=f'{MODEL_CPU},mperf-jitter=100')
    assert not CAL_RE.search(res.output), res.output
    assert 'MPERF: calibration against TSC' in res.output, res.output
    spin = _samples(res.output, 'spin')
    assert 0.95 <= spin['mperf_per_tsc'] <= 1.05, spin
    reads = [int(v) for v in re.search(r'^reads (.*)$', res.output, re.M).group(1).split()]
    assert len(reads) == 8 and reads == sorted(reads) and reads[0] < reads[-1], reads
