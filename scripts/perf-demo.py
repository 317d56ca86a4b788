#!/usr/bin/python3
"""The perf part of 'make demo': the halted-time breakdown of a recording
of kvm:guest_halted ('perf kvm stat halted'), and its halted % per vCPU
over time (-I/--interval-print), drawn with gnuplot as build/demo-halted.png.

    scripts/perf-demo.py PERF.DATA [--interval MS] [--out PNG]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BUILD = TOP / 'build'
PERF = Path(os.environ.get('GH_PERF', BUILD / 'perf' / 'perf'))


def perf_halted(data: Path, *args: str) -> str:
    res = subprocess.run([str(PERF), 'kvm', '-i', str(data), 'stat', 'halted', *args],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise SystemExit(f'perf-demo: perf kvm stat halted {" ".join(args)}: {res.stderr.strip()}')
    return res.stdout


def series_rows(series: Path) -> list[dict[str, str]]:
    """The CSV rows of 'perf kvm stat halted -x, -I', by column name."""
    text = series.read_text()
    rows = list(csv.reader(io.StringIO(text[2:], newline='')))
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def plot(series: Path, out: Path, title: str, interval_s: float) -> None:
    """halted % per vCPU against time, one line per pid/vCPU, each point
    at the middle of its interval (the last one may be shorter)."""
    points: dict[str, list[str]] = {}
    ends = sorted({float(r['time']) for r in series_rows(series)})
    start = {t: max(0.0, t - interval_s, *(e for e in ends if e < t)) for t in ends}
    for r in series_rows(series):
        t = float(r['time'])
        key = f"{r['pid']} {r['comm']} vCPU {r['vcpu']}"
        points.setdefault(key, []).append(f"{(start[t] + t) / 2:.3f} {r['halted_pct']}\n")
    cols = {}
    for i, (k, pts) in enumerate(points.items()):
        dat = out.with_suffix(f'.{i}.dat')
        dat.write_text(''.join(pts))
        cols[k] = dat
    plots = ', '.join(f"'{d}' using 1:2 with linespoints lw 2 pt 7 ps 0.6 title '{k}'" for k, d in cols.items())
    script = f"""
set terminal pngcairo size 900,420 font ',10' noenhanced
set output '{out}'
set title '{title}'
set xlabel 'time (s)'
set ylabel 'halted % of guest time'
set yrange [-5:105]
set grid
set key bottom right
plot {plots}
"""
    subprocess.run(['gnuplot'], input=script, text=True, check=True, timeout=60)
    for d in cols.values():
        d.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('data', type=Path)
    ap.add_argument('--interval', type=int, default=1000, help='ms per point')
    ap.add_argument('--out', type=Path, default=BUILD / 'demo-halted.png')
    args = ap.parse_args()

    report = perf_halted(args.data).rstrip()
    # The Source column says how far the figures can be trusted.
    how = ('mperf: exact counts of what the CPU did' if ' mperf' in report and ' sampled' not in report
           else 'sampled: estimates, with their standard error in +-pp')
    print('\nThe same run as perf sees it: the selftest recorded with '
          '"perf kvm stat record --event=halted",\nreported with "perf kvm stat halted" '
          f'(source {how}):')
    print(report)
    series = args.out.with_suffix('.csv')
    series.write_text(perf_halted(args.data, '-x,', '-I', str(args.interval)))
    rel = series.relative_to(TOP) if series.is_relative_to(TOP) else series
    print(f'\nHalted % per vCPU every {args.interval} ms: {rel} '
          f'("perf kvm stat halted -x, -I {args.interval}")')
    if shutil.which('gnuplot') is None:
        print('perf-demo: gnuplot is missing (apt-get install gnuplot-nox); no picture',
              file=sys.stderr)
        return 1
    plot(series, args.out, 'guest_halted_test under perf kvm stat halted -I '
         f'{args.interval}: the guest at 0, 50, 90, 100 % duty', args.interval / 1000)
    out = args.out.relative_to(TOP) if args.out.is_relative_to(TOP) else args.out
    print(f'Picture of it: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
