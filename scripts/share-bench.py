#!/usr/bin/python3
"""make bench: the noise of a vCPU's halted share, for the away hysteresis.

The scheduler counts a queued vCPU as away from its CPU (not making it
overloaded) once its halted share reaches ON, until it drops under OFF
(kernel/sched/fair.c, GUEST_HALTED_AWAY_ON/OFF).  This measures what those
two must span.  One boot of the test VM runs the selftest guest_halted_test
(passthrough phases of 0, 50, 90 and 100% halted, 4 s each, then phases
without passthrough and without accounting, which leave no kvm:guest_halted
events) pinned to CPU 1, twice: alone, and with a host busy loop pinned to
the same CPU.  kvm:guest_halted is traced all along; the share is then
rebuilt here from the events, interval by interval, with the kernel's
formula (guest_halted_share(): an average weighted as PELT weighs time,
half-life 32 ms of guest time).

Per run and per halted level (each event is put in the phase whose duty
its neighbours' mean halted fraction is nearest), it prints the share's
mean, standard deviation and 1st/99th percentiles, and for each candidate
(ON, OFF) pair how many times a second the vCPU would change between away
and not, and the share of the time it would be away.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmrun  # noqa: E402

PAIRS = ((0.75, 0.5), (0.5, 0.25), (0.5, 0.5))
LEVELS = (0.0, 0.5, 0.9)
Y = 0.5 ** (1 / 32)

GUEST_SCRIPT = '''
echo 1 > /sys/module/kvm/parameters/guest_halted
echo "@@source $(cat /sys/module/kvm/parameters/guest_halted_source)"
T=/sys/kernel/tracing
echo 30000 > $T/buffer_size_kb
for run in alone stressed; do
	S=
	[ $run = stressed ] && {{ taskset -c 1 sh -c 'while :; do :; done' & S=$!; }}
	echo > $T/trace
	echo 1 > $T/events/kvm/guest_halted/enable
	taskset -c 1 /selftests/guest_halted_test -t 100 > /dev/null 2>&1
	echo 0 > $T/events/kvm/guest_halted/enable
	[ -n "$S" ] && kill $S
	echo "@@run $run"
	grep ' guest_halted: ' $T/trace
done
echo 0 > /sys/module/kvm/parameters/guest_halted
'''

EVENT_RE = re.compile(r'\s(\d+\.\d+): guest_halted: vcpu \d+ .*?gtime_ns (\d+) halted_ns (\d+)')


def shares(lines: list[str]) -> list[tuple[float, float, float]]:
    """(time, share after the interval, the interval's halted fraction)."""
    out, share = [], 0.0
    for ln in lines:
        m = EVENT_RE.search(ln)
        if not m:
            continue
        t, g, h = float(m.group(1)), int(m.group(2)), int(m.group(3))
        if not g:
            continue
        keep = Y ** (g / (1 << 20))
        frac = min(h / g, 1.0)
        share = share * keep + frac * (1 - keep)
        out.append((t, share, frac))
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def report(name: str, series: list[tuple[float, float, float]]) -> None:
    level = []
    for i in range(len(series)):
        window = series[max(0, i - 12):i + 13]
        m = statistics.mean(x[2] for x in window)
        level.append(min(LEVELS, key=lambda d: abs(d - m)))
    print(f'{name}: {len(series)} intervals')
    for lv in LEVELS:
        idx = [i for i, v in enumerate(level) if v == lv]
        if len(idx) < 20:
            continue
        vals = [series[i][1] for i in idx]
        dur = sum(min(series[i][0] - series[i - 1][0], 0.5) for i in idx if i)
        print(f'  halted ~{lv:.0%}: {dur:4.1f} s, share mean {statistics.mean(vals):.3f} '
              f'sd {statistics.pstdev(vals):.3f} p1 {pct(vals, .01):.3f} '
              f'p99 {pct(vals, .99):.3f}')
        for on, off in PAIRS:
            away, flips, t_away = False, 0, 0.0
            for i, (t, s, _) in enumerate(series):
                new = s >= (off if away else on)
                if level[i] == lv:
                    flips += new != away
                    if new and i:
                        t_away += min(t - series[i - 1][0], 0.5)
                away = new
            print(f'    away from {on:g} until under {off:g}: {flips / dur:5.2f} changes/s, '
                  f'away {t_away / dur:.2f} of the time')


def main() -> int:
    print('share-bench: guest_halted_test alone and beside a busy loop on CPU 1, '
          'kvm:guest_halted traced, one boot...')
    res = vmrun.run_or_report('share-bench', GUEST_SCRIPT.format(), timeout=900)
    if res is None:
        return 1
    src = re.search(r'^@@source (\S+)', res.output, re.M)
    print(f'source of halted time: {src.group(1) if src else "?"}')
    parts = re.split(r'^@@run (\w+)\s*$', res.output, flags=re.M)
    runs = dict(zip(parts[1::2], parts[2::2]))
    if set(runs) != {'alone', 'stressed'}:
        print(f'share-bench: runs missing:\n{res.output[-3000:]}', file=sys.stderr)
        return 1
    for name, text in runs.items():
        series = shares(text.splitlines())
        if len(series) < 100:
            print(f'share-bench: {name}: only {len(series)} events', file=sys.stderr)
            return 1
        report(name, series)
    return 0


if __name__ == '__main__':
    sys.exit(main())
