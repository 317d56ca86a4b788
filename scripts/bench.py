#!/usr/bin/python3
"""make bench: the cost of guest halted-time accounting on the VM-Exit path.

One boot of the test VM.  An exit-heavy nested guest (N port-I/O exits, HLT
and PAUSE passed through, so that the VM is one KVM accounts) runs ROUNDS
times with kvm.guest_halted off, on, and off again, interleaved so that
drift hits all alike.  The result is the ratio of the median exit round
trip, on against off; the ratio of the two "off" runs is the noise floor of
the measurement.  Where accounting cannot be switched on (no source of
halted time), the report says so.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmrun  # noqa: E402

PARAM = '/sys/module/kvm/parameters/guest_halted'

GUEST_SCRIPT = '''
echo "source=$(cat /sys/module/kvm/parameters/guest_halted_source)"
gh-vmm exits {exits} passthrough > /dev/null	# warm-up
for r in $(seq {rounds}); do
	for mode in off on off2; do
		if [ $mode = on ]; then
			echo 1 > {param} 2>/dev/null
		else
			echo 0 > {param}
		fi
		state=$(cat {param})
		us=$(gh-vmm exits {exits} passthrough | sed -n 's/^us_per_exit=//p')
		echo "run round=$r mode=$mode state=$state us_per_exit=$us"
	done
done
echo 0 > {param}
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--exits', type=int, default=20000, help='exits per run')
    ap.add_argument('--rounds', type=int, default=7, help='off, on, off rounds')
    args = ap.parse_args()

    script = GUEST_SCRIPT.format(rounds=args.rounds, exits=args.exits, param=PARAM)
    print(f'bench: {args.rounds} x (off, on, off) runs of {args.exits} exits, one boot...')
    res = vmrun.run_or_report('bench', script,
                              timeout=60 + 3 * (args.rounds + 1) * args.exits * 0.002)
    if res is None:
        return 1

    source = re.search(r'^source=(\w+)', res.output, re.M).group(1)
    runs = re.findall(r'^run round=(\d+) mode=(\w+) state=(\w) us_per_exit=([\d.]+)',
                      res.output, re.M)
    off = [float(us) for _, mode, state, us in runs if state == 'N' and mode == 'off']
    on = [float(us) for _, mode, state, us in runs if state == 'Y']
    if len(off) != args.rounds:
        print(f'bench: parse error:\n{res.output}', file=sys.stderr)
        return 1

    def line(name: str, xs: list[float]) -> str:
        return (f'{name}: median {statistics.median(xs):8.2f} us/exit, '
                f'min {min(xs):8.2f}  (runs: {", ".join(f"{x:.2f}" for x in xs)})')

    print(f'source of halted time: {source}')
    print(line('accounting off', off))
    same = [float(us) for _, mode, state, us in runs if mode == 'off2']
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
    return 0


if __name__ == '__main__':
    sys.exit(main())
