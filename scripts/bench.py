#!/usr/bin/python3
"""make bench: the cost of guest halted-time accounting on the VM-Exit path.

Counter reads per exit: the VM-Exit path (kvm_arch_vcpu_ioctl_run, into
which vcpu_enter_guest() is inlined) of the patched vmlinux against the
unpatched base's, RDTSC/RDMSR/RDPRU instructions counted in the
disassembly.  The target is no read added.

Exit round trip: one boot of the test VM.  An exit-heavy nested guest (N
port-I/O exits, HLT and PAUSE passed through, so that the VM is one KVM
accounts; then N CPUID exits, which KVM handles in the kernel) runs ROUNDS
times with kvm.guest_halted off, on, and off again,
interleaved so that drift hits all alike, for each source of halted time
the CPU has.  The result is the ratio of the median exit round trip, on
against off; the ratio of the two "off" runs is the noise floor of the
measurement.  The exits KVM counted for the vCPU (its "exits" statistic)
give the extra exits the sampled source's timer causes.  Every exit of
this guest returns to user space, so each is a KVM_RUN round trip; a
kprobe on kvm_guest_halted_read() counts the counter reads the mperf
source makes per KVM_RUN (the target is none while the vCPU thread is not
switched out).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmrun  # noqa: E402

PARAM = '/sys/module/kvm/parameters/guest_halted'

SOURCE = '/sys/module/kvm/parameters/guest_halted_source'

GUEST_SCRIPT = '''
T=/sys/kernel/tracing
kp=
echo 'p:gh/read kvm_guest_halted_read' >> $T/kprobe_events 2>/dev/null && kp=1
gh-vmm exits {exits} passthrough > /dev/null	# warm-up
for src in mperf sampled; do
	echo $src > {source} 2>/dev/null || {{ echo "unavailable=$src"; continue; }}
	for r in $(seq {rounds}); do
		for mode in off on off2; do
			if [ $mode = on ]; then
				echo 1 > {param} 2>/dev/null
			else
				echo 0 > {param}
			fi
			state=$(cat {param})
			[ -n "$kp" ] && {{ echo > $T/trace; echo 1 > $T/events/gh/read/enable; }}
			out=$(taskset -c 2 gh-vmm exits {exits} passthrough)
			reads=na
			[ -n "$kp" ] && {{ echo 0 > $T/events/gh/read/enable;
				reads=$(grep -c ' read: (' $T/trace); }}
			us=$(echo "$out" | sed -n 's/^us_per_exit=//p')
			s=$(echo "$out" | sed -n 's/^seconds=//p')
			e=$(echo "$out" | sed -n 's/^kvm_exits=//p')
			kus=$(taskset -c 2 gh-vmm kexits {exits} passthrough |
				sed -n 's/^us_per_exit=//p')
			echo "run src=$src round=$r mode=$mode state=$state us_per_exit=$us" \\
				"seconds=$s kvm_exits=$e reads=$reads kus_per_exit=$kus"
		done
	done
done
echo 0 > {param}
echo auto > {source}
'''

READS = re.compile(r'\s(rdtscp?|rdmsr|rdpru)\b')


def counter_reads(vmlinux: Path, func: str) -> Optional[int]:
    """RDTSC/RDMSR/RDPRU instructions in @func of @vmlinux."""
    if not vmlinux.exists():
        return None
    out = subprocess.run(['objdump', '-d', '--no-show-raw-insn', f'--disassemble={func}',
                          str(vmlinux)], capture_output=True, text=True, timeout=300).stdout
    if f'<{func}>:' not in out:
        return None
    return sum(1 for ln in out.splitlines() if READS.search(ln))


def report_reads() -> None:
    build = Path(__file__).resolve().parent.parent / 'build'
    for func in ('kvm_arch_vcpu_ioctl_run', 'kvm_arch_vcpu_load'):
        patched = counter_reads(build / 'kernel' / 'vmlinux', func)
        base = counter_reads(build / 'kernel-base' / 'vmlinux', func)
        if patched is None or base is None:
            print(f'counter reads in {func}: vmlinux missing (run make kernel kernel-base)')
            continue
        print(f'counter reads in {func}: patched {patched}, base {base}, '
              f'added {patched - base}')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--exits', type=int, default=20000, help='exits per run')
    ap.add_argument('--rounds', type=int, default=7, help='off, on, off rounds')
    args = ap.parse_args()

    report_reads()
    script = GUEST_SCRIPT.format(rounds=args.rounds, exits=args.exits, param=PARAM,
                                 source=SOURCE)
    print(f'bench: {args.rounds} x (off, on, off) runs of {args.exits} exits per source, '
          'one boot...')
    res = vmrun.run_or_report('bench', script,
                              timeout=60 + 12 * (args.rounds + 1) * args.exits * 0.002)
    if res is None:
        return 1
    for src in re.findall(r'^unavailable=(\w+)', res.output, re.M):
        print(f'source {src}: unavailable on this CPU (accounting on cannot be measured)')
    status = 0
    for src in ('mperf', 'sampled'):
        if re.search(rf'^run src={src} ', res.output, re.M):
            status |= report_source(src, res.output, args.rounds, args.exits)
    return status


def report_source(source: str, output: str, rounds: int, exits: int) -> int:
    runs = re.findall(rf'^run src={source} round=(\d+) mode=(\w+) state=(\w) '
                      r'us_per_exit=([\d.]+) seconds=([\d.]+) kvm_exits=(\d+)',
                      output, re.M)
    reads = re.findall(rf'^run src={source} round=\d+ mode=on state=Y .* reads=(\d+) ',
                       output, re.M)
    kernel = {mode: [float(x) for x in re.findall(
        rf'^run src={source} round=\d+ mode={mode} state={state} .* kus_per_exit=([\d.]+)$',
        output, re.M)] for mode, state in (('off', 'N'), ('on', 'Y'), ('off2', 'N'))}
    off = [float(us) for _, mode, state, us, _, _ in runs if state == 'N' and mode == 'off']
    on = [float(us) for _, mode, state, us, _, _ in runs if state == 'Y']
    if len(off) != rounds:
        print(f'bench: parse error:\n{output}', file=sys.stderr)
        return 1

    def line(name: str, xs: list[float]) -> str:
        return (f'{name}: median {statistics.median(xs):8.2f} us/exit, '
                f'min {min(xs):8.2f}  (runs: {", ".join(f"{x:.2f}" for x in xs)})')

    print(f'\nsource of halted time: {source}')
    print(line('accounting off', off))
    same = [float(us) for _, mode, state, us, _, _ in runs if mode == 'off2']
    if on:
        print(line('accounting on ', on))
    else:
        print('accounting on: unavailable (no source of halted time on this CPU)')
    print(line('off, again     ', same))
    if on:
        print(f'ratio on/off: median {statistics.median(on) / statistics.median(off):.4f}, '
              f'min {min(on) / min(off):.4f}')
    # The same configuration twice: the noise of the measurement.
    print(f'noise floor, off/off in the same boot: median '
          f'{statistics.median(same) / statistics.median(off):.4f}, '
          f'min {min(same) / min(off):.4f}')

    def exits_per_s(mode: str) -> float:
        rate = [int(e) / float(s) for _, m, _, _, s, e in runs if m == mode and float(s) > 0]
        return statistics.median(rate)
    if on:
        print(f'exits per second KVM counted: on {exits_per_s("on"):.0f}, '
              f'off {exits_per_s("off"):.0f} (the guest does the same I/O in both)')
    if all(kernel.values()):
        print('in-kernel exits (CPUID, one KVM_RUN):')
        print(line('  accounting off', kernel['off']))
        print(line('  accounting on ', kernel['on']))
        print(line('  off, again     ', kernel['off2']))
        med = statistics.median
        print(f'  ratio on/off: median {med(kernel["on"]) / med(kernel["off"]):.4f}; '
              f'noise floor off/off: median {med(kernel["off2"]) / med(kernel["off"]):.4f}')
    if reads:
        per_run = [int(r) / (exits + 1) for r in reads]
        print(f'counter reads (kvm_guest_halted_read) per KVM_RUN, accounting on: '
              f'median {statistics.median(per_run):.5f}, max {max(per_run):.5f} '
              f'(reads per run: {", ".join(reads)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
