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

With --bits 32, the perf is the 32-bit one of scripts/build-perf32.sh
(gcc -m32, no library: no libtraceevent, so no 'perf kvm stat'), built
with the same sanitizers into build/perf32-asan, and each copy is read by
what that perf can read: 'perf report --header-only -I' (class header:
the feature sections, attrs, event descriptions, build-ids, strings,
topologies and memory bitmaps, where 32-bit size arithmetic differs),
'perf report --stdio' (class report; both with --sort pid, as a
tracepoint's default sort key needs libtraceevent) and 'perf script'
(class script).  Its seed is the synthesized one with every feature
section perf reads without a library added (perf-synth.py --full-header)
and 120 samples rather than 2000, or where this host has no KVM
tracepoints, perf-synth's recording of kvm:guest_halted with them: no VM.
Each distinct crash (its kind and innermost perf frame) is kept as
crash-N.data and crash-N.txt, and read again by a 64-bit ASan perf
(build/perf-asan/perf, or --cross) to tell whether it is 32-bit
specific.

A crash is a death by signal or a sanitizer report; a hang is a run over
the timeout.  A crash whose innermost frame is in the system's
libtraceevent (Debian's libtraceevent1, which parses the event formats a
file carries) is counted apart, as outside perf.  The result is printed as
key=value lines, and kept with the copies that failed under build/fuzz/
(build/fuzz32/ with --bits 32).

    scripts/fuzz-perf-kvm-stat.py [--bits 32] [--copies N] [--seed FILE] [--jobs N]
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
ASAN_PERF32 = BUILD / 'perf32-asan' / 'perf'
OUT32 = BUILD / 'fuzz32'
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
# What the 32-bit perf, without libtraceevent, reads.
CLASSES32 = ['header', 'report', 'script']
SAN_CFLAGS = ('-fsanitize=address,undefined -fno-sanitize=alignment '
              '-fno-omit-frame-pointer -g')
SAN_LDFLAGS = '-fsanitize=address,undefined'
KVM_FORMATS = Path('/sys/kernel/tracing/events/kvm')


def build_asan_perf(jobs: int, tree: Path) -> None:
    """Built every time: make rebuilds what changed in the tree, which a
    list of files to compare times with would miss."""
    out = ASAN_PERF.parent
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


def build_asan_perf32(jobs: int, tree: Path) -> None:
    """The perf of scripts/build-perf32.sh (gcc -m32, no library), with the
    sanitizers of build_asan_perf(), into build/perf32-asan.  The 32-bit
    sanitizer runtimes, lib32asan8 and lib32ubsan1, come with gcc-multilib
    (scripts/deps.sh perf32).  Built every time, as build_asan_perf()."""
    out = ASAN_PERF32.parent
    script = TOP / 'scripts' / 'build-perf32.sh'
    print(f'fuzz: building 32-bit perf with AddressSanitizer into {out.relative_to(TOP)}',
          flush=True)
    env = {**os.environ, 'JOBS': str(jobs), 'BUILD_DIR': str(tree.parent),
           'PERF32_OUT': str(out), 'PERF32_CFLAGS': SAN_CFLAGS,
           'PERF32_LDFLAGS': SAN_LDFLAGS}
    subprocess.run([str(script)], check=True, env=env, timeout=3600)


def load_synth():
    import importlib.util
    spec = importlib.util.spec_from_file_location('perf_synth', TOP / 'scripts' / 'perf-synth.py')
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    return synth


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


def argv_of(cls: str, path: Path, idx: int, perf: Path | None = None) -> list[str]:
    perf = str(perf or ASAN_PERF)
    if cls == 'script':
        return [perf, 'script', '-i', str(path)]
    if cls == 'header':
        return [perf, 'report', '--header-only', '-I', '--sort', 'pid', '-i', str(path)]
    if cls == 'report':
        return [perf, 'report', '--stdio', '--sort', 'pid', '-i', str(path)]
    if cls == 'halted':
        return [perf, 'kvm', 'stat', 'halted', '-i', str(path),
                *OUTPUTS[idx % len(OUTPUTS)]]
    return [perf, 'kvm', '-i', str(path), 'stat', 'report', f'--event={cls}', '--stdio']


FRAME = re.compile(r'^\s*#(\d+) 0x[0-9a-f]+ in (\S+) (\S+)', re.M)


READERS = ('ion', 'readn', '__do_read_fd', '__do_read_buf', '__do_read', 'do_read_u32',
           'do_read_u64', 'do_read_string', 'do_read_bitmap', 'perf_data__read')


def perf_frames(err: str) -> list[str]:
    """The frames of the first stack of a report that are perf's own (not
    the sanitizer's, not libc's), innermost first, as 'function file:line'
    (the file relative to tools/)."""
    frames = []
    for f in FRAME.finditer(err):
        if f[1] == '0' and frames:
            break
        func, where = f[2], f[3]
        if ('libsanitizer' in where or where.startswith(('(', '/lib', '/usr/'))
                or func.startswith(('__interceptor_', '__asan', '__ubsan', '__sanitizer'))):
            continue
        frames.append(f'{func} {where.split("/tools/", 1)[-1]}')
    return frames


def signature(err: str, rc: int | None) -> tuple[str, str]:
    """A crash's kind (the sanitizer's, or the signal) and where: its
    innermost frame in perf's own source and that frame's caller."""
    m = re.search(r'ERROR: AddressSanitizer: ([\w-]+)', err)
    if m:
        kind = m[1]
        if kind == 'SEGV':
            kind += ' (write)' if 'WRITE memory access' in err else ' (read)'
        acc = re.search(r'\n(READ|WRITE) of size \d+', err)
        if acc:
            kind += f' {acc[1]}'
    else:
        m = re.search(r'runtime error: (.*)', err)
        # Numbers vary with the copy: the kind is the message without them.
        kind = re.sub(r'-?\b(0x[0-9a-f]+|\d+)\b', 'N', m[1]).strip() if m else (
            f'signal {-rc}' if rc is not None and rc < 0 else f'exit {rc}')
    frames = perf_frames(err)
    if not frames:
        u = re.search(r'(\S+?\.[ch]:\d+):\d+: runtime error', err)
        frames = [u[1].split('/tools/', 1)[-1]] if u else ['?']
    # The caller: the first that is not a reading helper (readn() is
    # where every too-small buffer overflows).
    callers = [f.split()[0] for f in frames[1:] if f.split()[0] not in READERS]
    return kind, ' <- '.join([frames[0]] + callers[:1])


def run_one(idx: int, data: bytes, what: str, work: Path, timeout: float,
            cls: str = 'halted', deadline: float | None = None) -> dict | None:
    if deadline is not None and time.monotonic() > deadline:
        return None
    path = work / f'copy-{idx}-{cls}.data'
    path.write_bytes(data)
    argv = argv_of(cls, path, idx)
    result = {'idx': idx, 'what': what, 'argv': argv, 'cls': cls, 'path': path}
    try:
        res = subprocess.run(argv, capture_output=True, timeout=timeout,
                             env={**os.environ, **SAN_ENV, 'PAGER': 'cat'})
        err = res.stderr.decode('utf-8', 'replace')
        result['rc'] = res.returncode
        result['sanitizer'] = any(m in err for m in SAN_MARKS)
        result['crash'] = res.returncode < 0 or res.returncode in (98, 99)
        result['hang'] = False
        result['stderr'] = err[-12000:]
        result['signature'] = signature(err, res.returncode)
        top = re.search(r'#0 0x[0-9a-f]+ +(?:in \S+ )?\(?(\S+)', err)
        result['libtraceevent'] = bool(top and 'libtraceevent.so' in top.group(1))
    except subprocess.TimeoutExpired:
        result.update(rc=None, sanitizer=False, crash=False, hang=True, stderr='',
                      libtraceevent=False, signature=('hang', '?'))
    if not (result['crash'] or result['sanitizer'] or result['hang']):
        path.unlink()
    return result


def cross_check(first: dict, perf: Path, timeout: float) -> str:
    """Whether the copy of `first` fails the same way on the perf `perf`
    (the 64-bit ASan perf): 'yes', 'no (rc N)' or 'other: KIND at FRAME'."""
    argv = argv_of(first['cls'], first['path'], first['idx'], perf)
    try:
        res = subprocess.run(argv, capture_output=True, timeout=timeout,
                             env={**os.environ, **SAN_ENV, 'PAGER': 'cat'})
    except subprocess.TimeoutExpired:
        return 'hang'
    err = res.stderr.decode('utf-8', 'replace')
    if not (res.returncode < 0 or res.returncode in (98, 99)
            or any(m in err for m in SAN_MARKS)):
        return f'no (rc {res.returncode})'
    kind, frame = signature(err, res.returncode)
    if (kind, frame) == first['signature']:
        return 'yes'
    return f'other: {kind} at {frame}'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--bits', type=int, choices=(64, 32), default=64,
                    help='fuzz the 64-bit perf (perf kvm stat) or the 32-bit one '
                    '(header, report, script; default %(default)s)')
    ap.add_argument('--copies', type=int, default=1000)
    ap.add_argument('--seed', type=Path, help='recording to mutate (default: synthesized '
                    'from this host\'s kvm formats, else recorded in the VM with --bits 64)')
    ap.add_argument('--rng', type=int, default=1, help='random seed of the mutations')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 2)
    ap.add_argument('--timeout', type=float, default=30.0)
    ap.add_argument('--max-seconds', type=float,
                    help='stop starting runs after this long; copies counts those run')
    ap.add_argument('--perf', type=Path, help='an AddressSanitizer perf to use')
    ap.add_argument('--cross', type=Path,
                    help='with --bits 32, the 64-bit ASan perf that reads each distinct '
                    'crash again (default build/perf-asan/perf when built)')
    ap.add_argument('--tree', type=Path, default=BUILD / 'linux',
                    help='the tree to build it from (default build/linux)')
    ap.add_argument('--classes', help='what reads each copy (default: '
                    f'{",".join(CLASSES)}; with --bits 32: {",".join(CLASSES32)})')
    ap.add_argument('--out', type=Path, help='where failures are kept (default build/fuzz, '
                    'build/fuzz32 with --bits 32)')
    args = ap.parse_args()
    bits32 = args.bits == 32

    global ASAN_PERF
    if args.perf:
        ASAN_PERF = args.perf
    elif bits32:
        build_asan_perf32(args.jobs, args.tree)
        ASAN_PERF = ASAN_PERF32
    else:
        build_asan_perf(args.jobs, args.tree)
    out = args.out or (OUT32 if bits32 else OUT)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if args.seed:
        seed = args.seed
    elif (KVM_FORMATS / 'kvm_exit' / 'format').exists():
        synth = load_synth()
        seed = out / 'seed.data'
        formats = {n: (KVM_FORMATS / n / 'format').read_text() for n in synth.KVM_EVENTS}
        if bits32:
            # The 32-bit perf skips the tracing data and parses the header:
            # the seed has every section it reads, and fewer samples (120,
            # not 2000), so that a blind mutation lands in the header more
            # often than in the samples.
            blob = synth.add_features(synth.kvm_recording(formats, cycles=3),
                                      synth.header_features())
        else:
            blob = synth.kvm_recording(formats)
        seed.write_bytes(blob)
    elif bits32:
        # The 32-bit perf does not read event formats: no VM needed.
        synth = load_synth()
        seed = out / 'seed.data'
        blob, _ = synth.build([(3000, 'qemu-vm0', 2, 30, 50.0, 1),
                               (3100, 'qemu-vm1', 2, 30, 20.0, 2)], seed=1)
        seed.write_bytes(synth.add_features(blob, synth.header_features()))
    else:
        seed = record_seed(out / 'seed.data')
    data = Path(seed).read_bytes()
    classes = (args.classes or ','.join(CLASSES32 if bits32 else CLASSES)).split(',')

    # The unmutated seed must report cleanly, or the fuzzing proves nothing.
    for cls in classes:
        base = run_one(-1, data, 'seed', out, args.timeout, cls)
        if base['rc'] != 0:
            print(f'fuzz: the seed does not report as {cls}: {base["stderr"]}', file=sys.stderr)
            return 1

    rnd = random.Random(args.rng)
    copies = [mutate(data, rnd) for _ in range(args.copies)]
    start = time.monotonic()
    deadline = start + args.max_seconds if args.max_seconds else None
    results = []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futs = [pool.submit(run_one, i, c, what, out, args.timeout, cls, deadline)
                for i, (c, what) in enumerate(copies) for cls in classes]
        for f in cf.as_completed(futs):
            if f.result() is not None:
                results.append(f.result())
    secs = time.monotonic() - start
    # With --max-seconds, a copy counts when every class read it.
    done = {}
    for r in results:
        done[r['idx']] = done.get(r['idx'], 0) + 1
    full = {i for i, n in done.items() if n == len(classes)}
    results = [r for r in results if r['idx'] in full]

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
    print(f'copies={len(full)} runs={len(results)} seconds={secs:.0f} reported={accepted} '
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

    # Each distinct failure: its kind and innermost perf frame, how many
    # runs of which classes, a reproducer, and (32-bit) the 64-bit verdict.
    cross = args.cross or (BUILD / 'perf-asan' / 'perf' if bits32 else None)
    if cross and not cross.exists():
        cross = None
    distinct: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(crashes + [r for r in reports if r not in crashes] + hangs,
                    key=lambda r: (r['idx'], r['cls'])):
        distinct.setdefault(r['signature'], []).append(r)
    for n, (sig, rs) in enumerate(sorted(distinct.items(), key=lambda kv: -len(kv[1])), 1):
        first = rs[0]
        repro = out / f'crash-{n}.data'
        if first['path'].exists():
            shutil.copy(first['path'], repro)
        verdict = cross_check(first, cross, args.timeout) if cross and not first['hang'] else None
        by_cls = ','.join(f'{c}:{sum(r["cls"] == c for r in rs)}' for c in classes
                          if any(r['cls'] == c for r in rs))
        with open(out / f'crash-{n}.txt', 'w') as f:
            f.write(f"{sig[0]} at {sig[1]}\ncopy {first['idx']} ({first['what']}), "
                    f"reproducer {repro.name}\n{' '.join(argv_of(first['cls'], repro, first['idx']))}\n"
                    + (f'on {cross}: {verdict}\n' if verdict else '') + f"\n{first['stderr']}\n")
        print(f'distinct={n} runs={len(rs)} classes={by_cls} kind="{sig[0]}" frame="{sig[1]}" '
              f'reproducer={repro.relative_to(TOP) if repro.is_relative_to(TOP) else repro}'
              + (f' on_64bit="{verdict}"' if verdict else ''))
    if crashes or reports or hangs:
        print(f'fuzz: failures in {out / "failures.txt"}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
