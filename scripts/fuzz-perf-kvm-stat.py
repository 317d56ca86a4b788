#!/usr/bin/python3
"""Fuzz 'perf kvm stat' and 'perf script' with mutated copies of a recording.

perf is built with AddressSanitizer and UBSan (but its alignment check)
into build/perf-asan, from build/linux (or --tree), with the flags of
scripts/build-perf.sh.  The seed is, unless --seed names one, a recording
of every 'perf kvm stat' class (kvm_entry, kvm_exit, kvm_pio, kvm_mmio,
kvm_msr and kvm:guest_halted, each its own attr, with the kernel's own
format files from /sys/kernel/tracing/events/kvm; scripts/perf-synth.py
--kvm), or where this host has no KVM tracepoints, a recording made in the
test VM ('perf kvm stat record' around a HLT-passthrough guest).  Each copy
is mutated in one or more of these ways: truncated, bits flipped, bytes
overwritten, a header field (section offsets and sizes, attr size), a field
of any attr (type, size, config, sample_type, flags), an entry of the
feature table (offset, size) or bytes inside a feature section (tracing
data, event descriptions, topology, strings), a sample's header size or raw
size changed.  Every copy is read by every class: 'perf kvm stat halted'
(table, CSV, JSON and -I in turn), 'perf kvm stat report' with
--event=vmexit, mmio, ioport and msr, and 'perf script'.

A crash is a death by signal or a sanitizer report; a hang is a run over
the timeout.  A crash whose innermost frame is in the system's
libtraceevent (Debian's libtraceevent1, which parses the event formats a
file carries) is counted apart, as outside perf.  The result is printed as
key=value lines, and kept with the copies that failed under build/fuzz/.

    scripts/fuzz-perf-kvm-stat.py [--copies N] [--seed FILE] [--jobs N]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BUILD = TOP / 'build'
ASAN_PERF = BUILD / 'perf-asan' / 'perf'
OUT = BUILD / 'fuzz'
sys.path.insert(0, str(TOP / 'scripts'))

SAN_ENV = {
    # Leak checking is off: perf frees little on its error paths by design
    # (it exits); memory errors and undefined behaviour are what is sought.
    # A huge allocation asked for by a damaged size field fails as it would
    # without ASan (NULL), rather than ending the run.
    'ASAN_OPTIONS': 'detect_leaks=0:allocator_may_return_null=1:abort_on_error=0:exitcode=99',
    'UBSAN_OPTIONS': 'print_stacktrace=1:halt_on_error=1:exitcode=98',
}
SAN_MARKS = ('ERROR: AddressSanitizer', 'runtime error:', 'ERROR: LeakSanitizer',
             'SUMMARY: UndefinedBehaviorSanitizer')
OUTPUTS = [[], ['-x,'], ['--json'], ['-x;', '-I', '100'], ['-k', 'halted_pct']]
CLASSES = ['halted', 'vmexit', 'mmio', 'ioport', 'msr', 'script']
KVM_FORMATS = Path('/sys/kernel/tracing/events/kvm')


def build_asan_perf(jobs: int, tree: Path) -> None:
    out = ASAN_PERF.parent
    if ASAN_PERF.exists() and ASAN_PERF.stat().st_mtime >= max(
            p.stat().st_mtime for p in (tree / 'tools/perf/builtin-kvm.c',
                                        tree / 'tools/perf/arch/x86/util/kvm-stat.c')):
        return
    out.mkdir(parents=True, exist_ok=True)
    print(f'fuzz: building perf with AddressSanitizer into {out.relative_to(TOP)}', flush=True)
    flags = ('NO_LIBPYTHON=1 NO_LIBPERL=1 NO_GTK2=1 NO_SLANG=1 NO_LIBUNWIND=1 NO_LIBNUMA=1 '
             'NO_LIBBABELTRACE=1 NO_JVMTI=1 NO_SDT=1 NO_LIBCAP=1 NO_LIBBPF=1 BUILD_BPF_SKEL=0 '
             'NO_LIBPFM4=1 NO_LIBCRYPTO=1 NO_LIBLLVM=1 WERROR=0').split()
    cmd = ['make', '-s', '-C', str(tree / 'tools/perf'), f'O={out}', f'-j{jobs}', *flags,
           # Not alignment: perf reads records in place from the file, and
           # x86, the only architecture of kvm:guest_halted, allows
           # misaligned loads.
           'EXTRA_CFLAGS=-fsanitize=address,undefined -fno-sanitize=alignment '
           '-fno-omit-frame-pointer -g',
           'LDFLAGS=-fsanitize=address,undefined']
    with open(out / 'build.log', 'w') as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=3600)


def record_seed(dest: Path) -> Path:
    """Record kvm:guest_halted and the other kvm events in the test VM."""
    import vmrun
    res = vmrun.VM().run('echo 1 > /sys/module/kvm/parameters/guest_halted && '
                         'perf kvm -o seed.data stat record -a -- gh-vmm halt 3 > /dev/null',
                         timeout=240)
    if res.rc != 0:
        raise SystemExit(f'fuzz: recording the seed failed:\n{res.describe()}')
    shutil.copy(res.share / 'seed.data', dest)
    return dest


def mutate(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    b = bytearray(data)
    done = []
    for _ in range(rnd.choice((1, 1, 2, 3))):
        kind = rnd.choice(('truncate', 'bitflip', 'bytes', 'header', 'attr', 'attr',
                           'feature', 'feature', 'sample'))
        if kind == 'truncate' and len(b) > 8:
            del b[rnd.randrange(8, len(b)):]
        elif kind == 'bitflip':
            for _ in range(rnd.randint(1, 16)):
                i = rnd.randrange(len(b))
                b[i] ^= 1 << rnd.randrange(8)
        elif kind == 'bytes':
            i = rnd.randrange(len(b))
            n = rnd.randint(1, 64)
            b[i:i + n] = rnd.randbytes(min(n, len(b) - i))
        elif kind == 'header' and len(b) >= 104:
            # size, attr_size, attrs/data/event_types offsets and sizes.
            off = rnd.choice(range(8, 104, 8))
            b[off:off + 8] = struct.pack('<Q', rnd.choice(
                (0, 1, 0xffffffffffffffff, rnd.getrandbits(64), rnd.getrandbits(16),
                 struct.unpack_from('<Q', b, off)[0] + rnd.randint(-64, 64) & (2**64 - 1))))
        elif kind == 'attr' and len(b) >= 104:
            # A field of any of the attrs, each attr_size + 16 bytes.
            entry, attrs, size = struct.unpack_from('<QQQ', b, 16)
            n = max(1, size // entry) if 16 < entry < 4096 else 1
            attrs += rnd.randrange(n) * (entry if 16 < entry < 4096 else 0)
            if attrs + 48 < len(b):
                off = attrs + rnd.choice((0, 4, 8, 24, 40, 44))
                width = 4 if off - attrs in (0, 4, 44) else 8
                val = rnd.choice((0, 1, 2, 0xffff, rnd.getrandbits(width * 8)))
                b[off:off + width] = val.to_bytes(width, 'little')
        elif kind == 'feature' and len(b) >= 104:
            # The feature table follows the data: an entry's offset or size,
            # or bytes inside the section it points at.
            data_off, data_size = struct.unpack_from('<QQ', b, 40)
            table = data_off + data_size
            nfeat = bin(int.from_bytes(b[72:104], 'little')).count('1')
            if nfeat and table + 16 * nfeat <= len(b):
                ent = table + 16 * rnd.randrange(nfeat)
                off, size = struct.unpack_from('<QQ', b, ent)
                if rnd.random() < 0.3:
                    i = ent + rnd.choice((0, 8))
                    b[i:i + 8] = struct.pack('<Q', rnd.choice(
                        (0, 1, 2**64 - 1, 2**32 - 1, rnd.getrandbits(32),
                         struct.unpack_from('<Q', b, i)[0] + rnd.randint(-16, 16) & (2**64 - 1))))
                elif 0 < size and off + size <= len(b):
                    for _ in range(rnd.randint(1, 8)):
                        i = off + rnd.randrange(size)
                        b[i:i + 4] = rnd.choice((rnd.randbytes(4), b'\xff\xff\xff\xff',
                                                 b'\0\0\0\0', struct.pack('<I', rnd.getrandbits(8))))
        elif kind == 'sample':
            # A record header's size, or the raw size behind it.
            data_off = struct.unpack_from('<Q', b, 40)[0] if len(b) >= 48 else 0
            if data_off and data_off < len(b) - 64:
                off = rnd.randrange(data_off, len(b) - 8) & ~7
                if rnd.random() < 0.5:
                    b[off + 6:off + 8] = struct.pack('<H', rnd.getrandbits(16))
                else:
                    b[off:off + 4] = struct.pack('<I', rnd.choice((0, 1, 7, 0xffffffff,
                                                                   rnd.getrandbits(12))))
        done.append(kind)
    return bytes(b), '+'.join(done)


def argv_of(cls: str, path: Path, idx: int) -> list[str]:
    if cls == 'script':
        return [str(ASAN_PERF), 'script', '-i', str(path)]
    if cls == 'halted':
        return [str(ASAN_PERF), 'kvm', 'stat', 'halted', '-i', str(path),
                *OUTPUTS[idx % len(OUTPUTS)]]
    return [str(ASAN_PERF), 'kvm', '-i', str(path), 'stat', 'report', f'--event={cls}',
            '--stdio']


def run_one(idx: int, data: bytes, what: str, work: Path, timeout: float,
            cls: str = 'halted') -> dict:
    path = work / f'copy-{idx}-{cls}.data'
    path.write_bytes(data)
    argv = argv_of(cls, path, idx)
    result = {'idx': idx, 'what': what, 'argv': argv, 'cls': cls}
    try:
        res = subprocess.run(argv, capture_output=True, timeout=timeout,
                             env={**os.environ, **SAN_ENV, 'PAGER': 'cat'})
        err = res.stderr.decode('utf-8', 'replace')
        result['rc'] = res.returncode
        result['sanitizer'] = any(m in err for m in SAN_MARKS)
        result['crash'] = res.returncode < 0 or res.returncode in (98, 99)
        result['hang'] = False
        result['stderr'] = err[-12000:]
        top = re.search(r'#0 0x[0-9a-f]+ +(?:in \S+ )?\(?(\S+)', err)
        result['libtraceevent'] = bool(top and 'libtraceevent.so' in top.group(1))
    except subprocess.TimeoutExpired:
        result.update(rc=None, sanitizer=False, crash=False, hang=True, stderr='',
                      libtraceevent=False)
    if not (result['crash'] or result['sanitizer'] or result['hang']):
        path.unlink()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--copies', type=int, default=1000)
    ap.add_argument('--seed', type=Path, help='recording to mutate (default: record one in the VM)')
    ap.add_argument('--rng', type=int, default=1, help='random seed of the mutations')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 2)
    ap.add_argument('--timeout', type=float, default=30.0)
    ap.add_argument('--perf', type=Path, help='an AddressSanitizer perf to use')
    ap.add_argument('--tree', type=Path, default=BUILD / 'linux',
                    help='the tree to build it from (default build/linux)')
    ap.add_argument('--classes', default=','.join(CLASSES),
                    help='what reads each copy (default: %(default)s)')
    ap.add_argument('--out', type=Path, default=OUT, help='where failures are kept')
    args = ap.parse_args()

    global ASAN_PERF
    if args.perf:
        ASAN_PERF = args.perf
    else:
        build_asan_perf(args.jobs, args.tree)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if args.seed:
        seed = args.seed
    elif (KVM_FORMATS / 'kvm_exit' / 'format').exists():
        import importlib.util
        spec = importlib.util.spec_from_file_location('perf_synth', TOP / 'scripts' / 'perf-synth.py')
        synth = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(synth)
        seed = out / 'seed.data'
        seed.write_bytes(synth.kvm_recording({n: (KVM_FORMATS / n / 'format').read_text()
                                              for n in synth.KVM_EVENTS}))
    else:
        seed = record_seed(out / 'seed.data')
    data = Path(seed).read_bytes()
    classes = args.classes.split(',')

    # The unmutated seed must report cleanly, or the fuzzing proves nothing.
    for cls in classes:
        base = run_one(-1, data, 'seed', out, args.timeout, cls)
        if base['rc'] != 0:
            print(f'fuzz: the seed does not report as {cls}: {base["stderr"]}', file=sys.stderr)
            return 1

    rnd = random.Random(args.rng)
    copies = [mutate(data, rnd) for _ in range(args.copies)]
    start = time.monotonic()
    results = []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futs = [pool.submit(run_one, i, c, what, out, args.timeout, cls)
                for i, (c, what) in enumerate(copies) for cls in classes]
        for f in cf.as_completed(futs):
            results.append(f.result())
    secs = time.monotonic() - start

    outside = [r for r in results if r['libtraceevent'] and (r['crash'] or r['sanitizer'])]
    crashes = [r for r in results if r['crash'] and r not in outside]
    reports = [r for r in results if r['sanitizer'] and r not in outside]
    hangs = [r for r in results if r['hang']]
    accepted = sum(1 for r in results if r['rc'] == 0)
    with open(out / 'failures.txt', 'w') as f:
        for r in crashes + reports + hangs + outside:
            f.write(f"copy {r['idx']} ({r['what']}): rc {r['rc']}\n{' '.join(r['argv'])}\n"
                    f"{r['stderr']}\n\n")
    print(f'perf={ASAN_PERF} seed={seed} seed_bytes={len(data)}')
    print(f'copies={len(copies)} runs={len(results)} seconds={secs:.0f} reported={accepted} '
          f'refused={len(results) - accepted - len(hangs)}')
    print(f'crashes={len(crashes)} sanitizer_reports={len(reports)} hangs={len(hangs)} '
          f'libtraceevent_crashes={len(outside)}')
    for cls in classes:
        mine = [r for r in results if r['cls'] == cls]
        print(f'class={cls} runs={len(mine)} reported={sum(r["rc"] == 0 for r in mine)} '
              f'crashes={sum(r in crashes for r in mine)} '
              f'sanitizer_reports={sum(r in reports for r in mine)} '
              f'hangs={sum(r["hang"] for r in mine)} '
              f'libtraceevent_crashes={sum(r in outside for r in mine)}')
    if crashes or reports or hangs:
        print(f'fuzz: failures in {out / "failures.txt"}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
