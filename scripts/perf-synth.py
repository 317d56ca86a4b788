#!/usr/bin/python3
"""Write a perf.data file of kvm:guest_halted samples with chosen values.

The host of the test suite has no KVM tracepoints, so host-side tests of
'perf kvm stat halted' (exact sums, CSV/JSON, sort keys, --vcpu,
--interval, bad input) read files made here.  The layout is what 'perf kvm
stat record' writes: one tracepoint attribute with TID, TIME, CPU, PERIOD
and RAW samples, the tracing data (the event's format), the CPU id, and a
COMM record per VMM.  The format is the kernel's (events/guest_halted.format).

    scripts/perf-synth.py OUT --vm PID:COMM:VCPUS:INTERVALS:HALTED_PCT:SOURCE ...

Each interval is 4 ms of guest time (HZ=250); with the sampled source an
interval is either halted or not, with the mperf source it is partly halted.
The sums it wrote are printed as key=value lines.  --full-header adds every
feature section perf reads without a library (build-ids, topologies,
caches, PMU capabilities, memory bitmaps; header_features()).
"""

from __future__ import annotations

import argparse
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
FORMAT = TOP / 'events' / 'guest_halted.format'
EVENT_ID = 1234

PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT = 1, 2
SAMPLE_TID, SAMPLE_TIME, SAMPLE_CPU, SAMPLE_PERIOD, SAMPLE_RAW = 1 << 1, 1 << 2, 1 << 7, 1 << 8, 1 << 10
SAMPLE_IDENTIFIER, SAMPLE_CGROUP = 1 << 16, 1 << 21
SAMPLE_TYPE = SAMPLE_TID | SAMPLE_TIME | SAMPLE_CPU | SAMPLE_PERIOD | SAMPLE_RAW
RECORD_COMM, RECORD_SAMPLE, RECORD_HEADER_BUILD_ID = 3, 9, 67
PERF_RECORD_FINISHED_ROUND = 12
HEADER_TRACING_DATA, HEADER_BUILD_ID, HEADER_HOSTNAME, HEADER_OSRELEASE = 1, 2, 3, 4
HEADER_NRCPUS = 7
HEADER_CPUID, HEADER_EVENT_DESC, HEADER_CPU_TOPOLOGY = 9, 12, 13
HEADER_MEM_TOPOLOGY = 22
HEADER_VERSION, HEADER_ARCH, HEADER_CPUDESC = 5, 6, 8
HEADER_TOTAL_MEM, HEADER_CMDLINE, HEADER_NUMA_TOPOLOGY = 10, 11, 14
HEADER_PMU_MAPPINGS, HEADER_GROUP_DESC, HEADER_CACHE, HEADER_SAMPLE_TIME = 16, 17, 20, 21
HEADER_CLOCKID, HEADER_CPU_PMU_CAPS, HEADER_CLOCK_DATA = 23, 28, 29
HEADER_HYBRID_TOPOLOGY, HEADER_PMU_CAPS = 30, 31
BUILD_ID_MISC_SIZE = 1 << 15
ATTR_SIZE = 136

HEADER_PAGE = (b'\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n'
               b'\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n'
               b'\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n'
               b'\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n')
HEADER_EVENT = (b'# compressed entry header\n\ttype_len    :    5 bits\n'
                b'\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n'
                b'\tpadding     : type == 29\n\ttime_extend : type == 30\n'
                b'\ttime_stamp : type == 31\n\tdata max type_len  == 28\n')


def kernel_print_fmt(tree: Path) -> str:
    """The 'print fmt:' line of kvm:guest_halted as the kernel in `tree`
    writes it in its format file: TP_printk()'s format and arguments from
    arch/x86/kvm/trace.h, with the macros they use expanded by the C
    preprocessor, as the kernel's __stringify() shows them."""
    trace = (tree / 'arch/x86/kvm/trace.h').read_text()
    event = trace[trace.index('TRACE_EVENT(guest_halted,'):]
    printk = event[event.index('TP_printk(') + len('TP_printk('):]
    depth, end = 1, 0
    for end, c in enumerate(printk):
        depth += {'(': 1, ')': -1}.get(c, 0)
        if depth == 0:
            break
    fmt, args = re.match(r'\s*("(?:[^"\\]|\\.)*")\s*,(.*)', printk[:end], re.S).groups()
    macro = trace[trace.index('#define KVM_ISA_VMX'):trace.index('#define TRACE_EVENT_KVM_EXIT')]
    src = ''.join(ln for f in ('arch/x86/include/uapi/asm/vmx.h', 'arch/x86/include/uapi/asm/svm.h')
                  for ln in (tree / f).read_text().splitlines(keepends=True)
                  if not ln.startswith('#include'))
    src += macro + ''.join(m[0] + '\n' for m in re.finditer(
        r'#define KVM_GUEST_HALTED_SOURCE_\w+\s+\d+', trace))
    src += '#define __entry REC\nARGS_BEGIN ' + args.replace('\\\n', ' ') + ' ARGS_END\n'
    out = subprocess.run(['gcc', '-E', '-P', '-undef', '-x', 'c', '-'], input=src, text=True,
                         capture_output=True, check=True).stdout
    expanded = re.search(r'ARGS_BEGIN (.*) ARGS_END', ' '.join(out.split()))[1]
    return f'print fmt: {fmt}, {expanded.strip()}'


def attr(type_: int = PERF_TYPE_TRACEPOINT, sample_type: int = SAMPLE_TYPE,
         config: int = EVENT_ID) -> bytes:
    flags = 1 << 9 | 1 << 13        # comm, task
    a = struct.pack('<IIQQQQQII', type_, ATTR_SIZE, config, 1,
                    sample_type, 0, flags, 1, 0)
    return a + bytes(ATTR_SIZE - len(a))


def tracing_data(system: str = 'kvm', name: str = 'guest_halted', page_size: int = 4096,
                 header_event_size: int | None = None) -> bytes:
    """`page_size` and `header_event_size` override what the data says,
    for damaged files."""
    fmt = FORMAT.read_text().replace('ID: @ID@', f'ID: {EVENT_ID}')
    fmt = fmt.replace('name: guest_halted', f'name: {name}').encode()
    out = bytearray(b'\x17\x08\x44tracing0.6\x00')
    out += struct.pack('<BBI', 0, 8, page_size)
    out += b'header_page\x00' + struct.pack('<Q', len(HEADER_PAGE)) + HEADER_PAGE
    out += b'header_event\x00' + struct.pack(
        '<Q', len(HEADER_EVENT) if header_event_size is None else header_event_size)
    out += HEADER_EVENT
    out += struct.pack('<I', 0)                               # ftrace formats
    out += struct.pack('<I', 1) + system.encode() + b'\x00' + struct.pack('<I', 1)
    out += struct.pack('<Q', len(fmt)) + fmt
    out += struct.pack('<I', 0) + struct.pack('<I', 0)        # kallsyms, printk
    out += struct.pack('<Q', 0)                               # saved cmdlines
    return bytes(out)


def tracing_data_of(formats: list[bytes], system: str = 'kvm') -> bytes:
    """Tracing data with these format files, all of one system."""
    out = bytearray(b'\x17\x08\x44tracing0.6\x00')
    out += struct.pack('<BBI', 0, 8, 4096)
    out += b'header_page\x00' + struct.pack('<Q', len(HEADER_PAGE)) + HEADER_PAGE
    out += b'header_event\x00' + struct.pack('<Q', len(HEADER_EVENT)) + HEADER_EVENT
    out += struct.pack('<I', 0)
    out += struct.pack('<I', 1) + system.encode() + b'\x00' + struct.pack('<I', len(formats))
    for fmt in formats:
        out += struct.pack('<Q', len(fmt)) + fmt
    out += struct.pack('<I', 0) + struct.pack('<I', 0) + struct.pack('<Q', 0)
    return bytes(out)


def parse_format(text: str) -> tuple[int, dict[str, tuple[int, int]], int]:
    """A format file's event id, its fields (offset, size) and record size."""
    ident = int(re.search(r'^ID: (\d+)', text, re.M)[1])
    fields = {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(
        r'field:[^;]*?(\w+)(?:\[\d*\])?;\s*offset:(\d+);\s*size:(\d+);', text)}
    return ident, fields, max(o + n for o, n in fields.values())


def raw_of(fmt: tuple[int, dict[str, tuple[int, int]], int], pid: int, **values: int) -> bytes:
    ident, fields, size = fmt
    r = bytearray(size + (-size % 8))
    values = {'common_type': ident, 'common_pid': pid, **values}
    for name, v in values.items():
        off, n = fields[name]
        r[off:off + n] = (v % (1 << 8 * n)).to_bytes(n, 'little')
    return bytes(r)


KVM_EVENTS = ('kvm_entry', 'kvm_exit', 'kvm_pio', 'kvm_mmio', 'kvm_msr')


def kvm_recording(formats: dict[str, str], vms: int = 2, vcpus: int = 2,
                  cycles: int = 50, bench: bool = False) -> bytes:
    """A recording as 'perf kvm stat record' makes of VMX guests: every kvm
    event of every class (entry and exit around port I/O, MSR writes and
    MMIO) and kvm:guest_halted, each its own attr, with `formats` the kernel's
    format files of KVM_EVENTS by name (/sys/kernel/tracing/events/kvm/)."""
    texts = [formats[n] for n in KVM_EVENTS]
    texts.append(FORMAT.read_text().replace('ID: @ID@', f'ID: {EVENT_ID}'))
    fmts = [parse_format(t) for t in texts]
    entry, exit_, pio, mmio, msr, gh = range(len(fmts))
    st = SAMPLE_TYPE | SAMPLE_IDENTIFIER
    records = []
    for v in range(vms):
        pid = 3000 + 100 * v
        records.append((0, comm_record(pid, f'qemu-vm{v}', time=0)))
        for vcpu in range(vcpus):
            t = S0 = 1_000_000_000 + vcpu * 10_000
            for c in range(cycles):
                for reason, ev, vals in ((30, pio, dict(rw=1, port=0x3f8, size=1, count=1)),
                                         (32, msr, dict(write=1, ecx=0x6e0)),
                                         (49, mmio, dict(type=1, len=4, gpa=0xfee00000))):
                    seq = [(entry, dict(vcpu_id=vcpu)),
                           (exit_, dict(exit_reason=reason, isa=1, vcpu_id=vcpu)),
                           (ev, vals)]
                    # For perf-bench: one exit (entry and exit) per
                    # kvm:guest_halted event, so both classes read as many.
                    if bench:
                        seq = seq[:2] if reason == 30 else []
                    for i, vals2 in seq:
                        t += 1000
                        records.append((t, sample(pid, pid + 1 + vcpu, t, vcpu,
                                                  raw_of(fmts[i], pid, **vals2), ident=i + 1)))
                t += 4_000_000
                records.append((t, sample(pid, pid + 1 + vcpu, t, vcpu,
                                          raw_guest_halted(pid, vcpu, 4_000_000, 1_000_000 * (c % 5),
                                                           1, 2000000), ident=gh + 1)))
            del S0
    records.sort(key=lambda r: r[0])
    data = b''.join(r for _, r in records)
    attrs = []
    for i, (ident, _, _) in enumerate(fmts):
        a = bytearray(attr(PERF_TYPE_TRACEPOINT, st, ident))
        struct.pack_into('<Q', a, 40, struct.unpack_from('<Q', a, 40)[0] | 1 << 18)
        attrs.append((bytes(a), [i + 1]))
    feats = [(HEADER_TRACING_DATA, tracing_data_of([t.encode() for t in texts])),
             (HEADER_CPUID, feature_string('GenuineIntel,6,85,4')),
             (HEADER_HOSTNAME, feature_string('host')),
             (HEADER_NRCPUS, struct.pack('<II', 4, 4)),
             (HEADER_CPU_TOPOLOGY, struct.pack('<I', 1) + feature_string('0-3') +
              struct.pack('<I', 4) + b''.join(feature_string(str(i)) for i in range(4)) +
              b''.join(struct.pack('<II', i, 0) for i in range(4))),
             (HEADER_EVENT_DESC, event_desc([(a, f'kvm:{n}', ids) for (a, ids), n in
                                             zip(attrs, KVM_EVENTS + ('guest_halted',))]))]
    return assemble(attrs, data, feats)


def feature_string(s: str) -> bytes:
    b = s.encode() + b'\x00'
    b += bytes(-len(b) % 64)
    return struct.pack('<I', len(b)) + b


def comm_record(pid: int, comm: str | bytes, tid: int | None = None,
                time: int | None = None, exec_: bool = False) -> bytes:
    """With `time`, the record carries the sample id of an attr with
    sample_id_all (see recording())."""
    c = (comm if isinstance(comm, bytes) else comm.encode())[:15] + b'\x00'
    c += bytes(-len(c) % 8)
    tid = pid if tid is None else tid
    body = struct.pack('<II', pid, tid) + c
    if time is not None:
        body += sample_id(pid, tid, time)
    misc = 1 << 13 if exec_ else 0
    return struct.pack('<IHH', RECORD_COMM, misc, 8 + len(body)) + body


def sample_id(pid: int, tid: int, time: int, cpu: int = 0) -> bytes:
    """The sample id of SAMPLE_TYPE: TID, TIME, CPU."""
    return struct.pack('<IIQII', pid, tid, time, cpu, 0)


def task_record(kind: int, pid: int, ppid: int, time: int) -> bytes:
    """PERF_RECORD_FORK (7) or PERF_RECORD_EXIT (4) of a process."""
    body = struct.pack('<IIIIQ', pid, ppid, pid, ppid, time) + sample_id(pid, pid, time)
    return struct.pack('<IHH', kind, 0, 8 + len(body)) + body


def raw_guest_halted(pid: int, vcpu: int, gtime: int, halted: int, source: int,
                     tsc_khz: int) -> bytes:
    tsc = gtime * tsc_khz // 1000000 % 2**64
    halted_cycles = halted * tsc_khz // 1000000 % 2**64
    mperf = 0 if source == 2 else (tsc - halted_cycles) % 2**64
    r = struct.pack('<HBBi', EVENT_ID, 0, 0, pid)
    r += struct.pack('<III', vcpu, 0x60, 2) + bytes(4)      # SVM 'interrupt'
    r += struct.pack('<QQQQQIB', tsc, mperf, gtime, halted, halted_cycles, source,
                     int(source == 2))
    return r + bytes(-len(r) % 8)


def sample(pid: int, tid: int, time: int, cpu: int, raw: bytes,
           ident: int | None = None, cgroup: int | None = None) -> bytes:
    """With `ident`, the sample of a file with several attrs: it starts
    with the id of its attr (PERF_SAMPLE_IDENTIFIER)."""
    body = struct.pack('<IIQIIQ', pid, tid, time, cpu, 0, 1)
    if ident is not None:
        body = struct.pack('<Q', ident) + body
    # As the kernel does, the raw size counts the padding to 8 bytes.
    raw += bytes(-(len(raw) + 4) % 8)
    body += struct.pack('<I', len(raw)) + raw
    if cgroup is not None:
        body += struct.pack('<Q', cgroup)
    return struct.pack('<IHH', RECORD_SAMPLE, 1, 8 + len(body)) + body     # MISC_KERNEL


def build(vms: list[tuple[int, str, int, int, float, int]], seed: int,
          tsc_khz: int = 2000000, event: str = 'kvm:guest_halted',
          software: bool = False) -> tuple[bytes, dict[str, int]]:
    """The file, and the sums it holds.  `event` renames the tracepoint (a
    recording without kvm:guest_halted); `software` makes the samples those
    of a software event, without tracing data (a recording not of KVM)."""
    rnd = random.Random(seed)
    data = bytearray()
    sums: dict[str, int] = {}
    events = []
    for pid, comm, vcpus, intervals, pct, source in vms:
        data += comm_record(pid, comm)
        for vcpu in range(vcpus):
            t = 1_000_000_000 + vcpu * 1000
            for _ in range(intervals):
                gtime = 4_000_000 - rnd.randrange(0, 200_000)
                if source == 2:
                    halted = gtime if rnd.random() < pct / 100 else 0
                else:
                    halted = min(gtime, int(gtime * pct / 100) + rnd.randrange(-1000, 1000))
                    halted = max(halted, 0)
                t += 4_000_000
                events.append((t, pid, pid + 1 + vcpu, vcpu, gtime, halted, source))
                key = f'{pid}.{vcpu}'
                sums[f'gtime.{key}'] = sums.get(f'gtime.{key}', 0) + gtime
                sums[f'halted.{key}'] = sums.get(f'halted.{key}', 0) + halted
                sums[f'n.{key}'] = sums.get(f'n.{key}', 0) + 1
    events.sort()
    for t, pid, tid, vcpu, gtime, halted, source in events:
        data += sample(pid, tid, t, vcpu % 4, raw_guest_halted(pid, vcpu, gtime, halted,
                                                                source, tsc_khz))

    system, name = event.split(':')
    feats = [(HEADER_TRACING_DATA, tracing_data(system, name)),
             (HEADER_CPUID, feature_string('AuthenticAMD,23,49,0'))]
    if software:
        feats = feats[1:]
    attrs = [(attr(PERF_TYPE_SOFTWARE if software else PERF_TYPE_TRACEPOINT), [1])]
    return assemble(attrs, bytes(data), feats), sums


RECORD_EXIT, RECORD_FORK, RECORD_CGROUP = 4, 7, 19


def recording(records: list[tuple], tsc_khz: int = 2000000) -> bytes:
    """A file of the given records, in time order, with sample_id_all set,
    so that perf orders them by time with the samples:
      ('comm', pid, comm, time[, exec])   comm as bytes or str
      ('fork', pid, ppid, time), ('exit', pid, ppid, time)
      ('sample', pid, tid, vcpu, gtime_ns, halted_ns, source, time[, cgroup_id])
      ('cgroup', id, path, time)   PERF_RECORD_CGROUP; with it, samples
                                   carry their cgroup (perf record --all-cgroups)"""
    data = bytearray()
    cgroups = any(r[0] == 'cgroup' for r in records)
    for r in records:
        if r[0] == 'cgroup':
            path = r[2].encode() + b'\0'
            body = struct.pack('<Q', r[1]) + path + bytes(-len(path) % 8)
            body += sample_id(0, 0, r[3])
            data += struct.pack('<IHH', RECORD_CGROUP, 0, 8 + len(body)) + body
        elif r[0] == 'comm':
            data += comm_record(r[1], r[2], time=r[3], exec_=len(r) > 4 and r[4])
        elif r[0] in ('fork', 'exit'):
            data += task_record(RECORD_FORK if r[0] == 'fork' else RECORD_EXIT, r[1], r[2], r[3])
        else:
            _, pid, tid, vcpu, gtime, halted, source, time = r[:8]
            data += sample(pid, tid, time, vcpu % 4,
                           raw_guest_halted(pid, vcpu, gtime, halted, source, tsc_khz),
                           cgroup=(r[8] if len(r) > 8 else 0) if cgroups else None)
    a = bytearray(attr(sample_type=SAMPLE_TYPE | (SAMPLE_CGROUP if cgroups else 0)))
    struct.pack_into('<Q', a, 40, struct.unpack_from('<Q', a, 40)[0] | 1 << 18)
    feats = [(HEADER_TRACING_DATA, tracing_data()),
             (HEADER_CPUID, feature_string('AuthenticAMD,23,49,0'))]
    return assemble([(bytes(a), [1])], bytes(data), feats)


def assemble(attrs: list[tuple[bytes, list[int]]], data: bytes,
             feats: list[tuple[int, bytes]]) -> bytes:
    """A perf.data file: its attrs, each with its sample ids, its data
    records, and its feature sections (bit, contents) in bit order."""
    header_size = 104
    attrs_off = header_size
    ids_off = attrs_off + (ATTR_SIZE + 16) * len(attrs)
    data_off = ids_off + 8 * sum(len(ids) for _, ids in attrs)
    out = bytearray()
    feats = sorted(feats)
    bitmap = 0
    for bit, _ in feats:
        bitmap |= 1 << bit
    out += b'PERFILE2' + struct.pack('<QQ', header_size, ATTR_SIZE + 16)
    out += struct.pack('<QQ', attrs_off, (ATTR_SIZE + 16) * len(attrs))
    out += struct.pack('<QQ', data_off, len(data))
    out += struct.pack('<QQ', 0, 0)
    out += bitmap.to_bytes(32, 'little')
    off = ids_off
    for a, ids in attrs:
        out += a + struct.pack('<QQ', off, 8 * len(ids))
        off += 8 * len(ids)
    for _, ids in attrs:
        out += b''.join(struct.pack('<Q', i) for i in ids)
    assert len(out) == data_off
    out += data
    feat_off = len(out) + 16 * len(feats)
    table = bytearray()
    payload = bytearray()
    for _, blob in feats:
        table += struct.pack('<QQ', feat_off + len(payload), len(blob))
        payload += blob
    out += table + payload
    return bytes(out)


def event_desc(events: list[tuple[bytes, str, list[int]]]) -> bytes:
    """HEADER_EVENT_DESC: each event's attr, name and ids."""
    out = bytearray(struct.pack('<II', len(events), ATTR_SIZE))
    for a, name, ids in events:
        out += a + struct.pack('<I', len(ids)) + feature_string(name)
        out += b''.join(struct.pack('<Q', i) for i in ids)
    return bytes(out)


# Damaged and crafted files that crashed, hung or misread perf before a fix
# of the tools-perf series, each with what it does.
CRAFTED = {
    'forged-name': 'a software event named kvm:guest_halted by HEADER_EVENT_DESC, '
                   'next to the real tracepoint',
    'forged-entry': 'a software event named kvm:kvm_entry by HEADER_EVENT_DESC',
    'bad-tracing-data': 'tracing data with a page size of 0 (double free)',
    'skip-past-eof': 'tracing data whose header_event size runs past the file (hang)',
    'build-id-size': 'a build-id record of 65535 bytes (stack overflow)',
    'string-past-section': 'a hostname string longer than its section',
    'string-without-nul': 'a hostname string that fills its section, with no NUL (overread)',
    'string-len-max': 'a hostname string of length 2^32-1 (malloc(0) on 32-bit before 0005)',
    'cpu-past-topology': 'a sample on CPU 2^31-1 of a 2-CPU topology',
    'mem-topology': 'a memory topology of two nodes with 200-bit bitmaps '
                    '(heap overflow on 32-bit before the bitmap fix)',
    'mem-bitmap-int-max': 'a memory topology bitmap of 2^32+64 bits, with 64 words '
                          '(heap overflow before the bitmap fix)',
    'attr-size-small': 'an attr whose size is 8, below the first ABI\'s 64 '
                       '(stack overflow on 32-bit before the attr size fix)',
    'numa-nr-wrap': 'a NUMA topology of 0x0aaaaaab nodes, whose array size wraps a '
                    '32-bit size_t (heap overflow on 32-bit before the count fix)',
    'cmdline-nr-max': 'a command line of 2^32-1 arguments (nr + 1 wrapped to an '
                      'empty argv before the count fix)',
    'strings-fail': 'a command line, CPU topology and PMU mappings whose second '
                    'string runs past its section (NULL printed before the count fix)',
    'build-id-size-max': 'a build-id record that says its build-id has 255 bytes '
                         '(stack overflow before the build-id size fix)',
    'ids-past-eof': 'an attr whose ids run 2 GiB past the end of the file '
                    '(heap overflow on 32-bit before the ids fix)',
    'dies-fail': 'a CPU topology whose second die string runs past its section '
                 '(NULL printed before the count fix)',
    'no-raw': 'kvm:kvm_entry samples without their raw data (SEGV in perf kvm stat '
              'before the raw size check)',
    'data-cut-short': 'a data section that ends 4 bytes into its last sample (hang)',
    'data-size-small': 'a data section of 5 bytes, less than an event header (hang)',
    'data-size-max': 'a data section of 2^64-1 bytes (hang)',
    'data-past-eof': 'a data section that runs 1 MiB past the end of the file '
                     '(SIGBUS)',
}

MEM_BLOCK_SIZE = 0x8000000


def mem_topology(nodes: list[tuple[int, int, list[int]]]) -> bytes:
    """HEADER_MEM_TOPOLOGY: version 1, the memory block size, then per node
    its id, its size (perf reads the bitmap's over it), and its bitmap of
    memory blocks: the size in bits, then the u64 words."""
    out = bytearray(struct.pack('<QQQ', 1, MEM_BLOCK_SIZE, len(nodes)))
    for node, bits, words in nodes:
        out += struct.pack('<QQQ', node, bits, bits)
        out += b''.join(struct.pack('<Q', w) for w in words)
    return bytes(out)


def build_id_record(misc: int, pid: int, build_id: bytes, name: str) -> bytes:
    """A HEADER_BUILD_ID entry: a build-id record of `build_id` (20 bytes,
    its size in the record) for the file `name`, padded to 64 bytes."""
    n = name.encode() + b'\0'
    n += bytes(-len(n) % 64)
    body = struct.pack('<i', pid) + build_id + struct.pack('<BBH', len(build_id), 0, 0) + n
    return struct.pack('<IHH', RECORD_HEADER_BUILD_ID, misc | BUILD_ID_MISC_SIZE,
                       8 + len(body)) + body


CLOCK_TOD_NS, CLOCK_ID_NS = 1_796_619_600_123_456_789, 12_345_678_901_234


def header_features() -> list[tuple[int, bytes]]:
    """Every feature section a 'perf record' of a 4-CPU x86_64 host writes
    that perf reads without a library, with the counts, sizes and strings
    its header parser works on: build-ids, strings, command line, NUMA,
    cache and hybrid topology, PMU mappings and capabilities, a group, the
    sample times, the clock, the memory topology's bitmaps.  They go with
    a recording's own (HEADER_TRACING_DATA, HEADER_CPUID, ...), see
    add_features(); for the tests of the header parser, and the 32-bit
    fuzzing (scripts/fuzz-perf-kvm-stat.py --bits 32)."""
    def strings(*ss: str) -> bytes:
        return b''.join(feature_string(s) for s in ss)
    u32 = lambda *v: struct.pack(f'<{len(v)}I', *v)             # noqa: E731
    u64 = lambda *v: struct.pack(f'<{len(v)}Q', *v)             # noqa: E731
    n0 = (1 << 24) - 1 | ((1 << 38) - 1) << 32
    n1 = ((1 << 72) - 1) << 128
    return [
        (HEADER_BUILD_ID, build_id_record(1, -1, bytes(range(1, 21)), '[kernel.kallsyms]') +
         build_id_record(1, -1, bytes(range(21, 41)),
                         '/lib/modules/6.12.117/kernel/arch/x86/kvm/kvm.ko') +
         build_id_record(2, 3000, bytes(range(41, 61)), '/usr/bin/qemu-system-x86_64')),
        (HEADER_HOSTNAME, feature_string('host')),
        (HEADER_OSRELEASE, feature_string('6.12.117')),
        (HEADER_VERSION, feature_string('6.12.117')),
        (HEADER_ARCH, feature_string('x86_64')),
        (HEADER_NRCPUS, u32(4, 4)),
        (HEADER_CPUDESC, feature_string('Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz')),
        (HEADER_TOTAL_MEM, u64(24 << 20)),
        (HEADER_CMDLINE, u32(6) + strings('perf', 'kvm', 'stat', 'record', '-a', 'sleep')),
        (HEADER_CPU_TOPOLOGY, u32(1) + strings('0-3') + u32(4) + strings('0', '1', '2', '3') +
         u32(0, 0, 1, 0, 2, 0, 3, 0) + u32(1) + strings('0-3') + u32(0, 0, 0, 0)),
        (HEADER_NUMA_TOPOLOGY, u32(2) + u32(0) + u64(12 << 20, 6 << 20) + strings('0-1') +
         u32(1) + u64(12 << 20, 7 << 20) + strings('2-3')),
        (HEADER_PMU_MAPPINGS, u32(4) + u32(4) + strings('cpu') + u32(1) + strings('software') +
         u32(2) + strings('tracepoint') + u32(10) + strings('msr')),
        (HEADER_GROUP_DESC, u32(1) + strings('{anon_group}') + u32(0, 1)),
        (HEADER_CACHE, u32(1, 3) +
         u32(1, 64, 64, 8) + strings('Data', '32K', '0') +
         u32(1, 64, 64, 8) + strings('Instruction', '32K', '0') +
         u32(2, 64, 1024, 16) + strings('Unified', '1024K', '0-3')),
        (HEADER_SAMPLE_TIME, u64(1_000_000_000, 1_300_000_000)),
        (HEADER_MEM_TOPOLOGY, mem_topology(
            [(0, 200, [n0 >> (64 * i) & (2**64 - 1) for i in range(4)]),
             (1, 200, [n1 >> (64 * i) & (2**64 - 1) for i in range(4)])])),
        (HEADER_CLOCKID, u64(1)),
        (HEADER_CPU_PMU_CAPS, u32(2) + strings('branches', '32', 'max_precise', '3')),
        # A real TOD, 2026-12-07 05:00:00.123456789 UTC, and a clock time
        # of 12345.678901234 s: past 2.1 s, which overflowed the 32-bit
        # long of print_clock_data() before the clock fix.
        (HEADER_CLOCK_DATA, u32(1, 1) + u64(CLOCK_TOD_NS, CLOCK_ID_NS)),
        (HEADER_HYBRID_TOPOLOGY, u32(2) + strings('cpu_core', '0-1', 'cpu_atom', '2-3')),
        (HEADER_PMU_CAPS, u32(2) +
         u32(2) + strings('branches', '32', 'max_precise', '3') + strings('cpu_core') +
         u32(1) + strings('branches', '32') + strings('cpu_atom')),
    ]


def add_features(blob: bytes, feats: list[tuple[int, bytes]]) -> bytes:
    """The perf.data file `blob`, whose feature sections follow its data
    (as 'perf record' and assemble() write them), with the sections
    `feats` (bit, contents) added, or put in place of its own."""
    data_off, data_size = struct.unpack_from('<QQ', blob, 40)
    bitmap = int.from_bytes(blob[72:104], 'little')
    table = data_off + data_size
    have = {}
    for i, bit in enumerate(b for b in range(256) if bitmap >> b & 1):
        off, size = struct.unpack_from('<QQ', blob, table + 16 * i)
        have[bit] = blob[off:off + size]
    have.update(feats)
    out = bytearray(blob[:table])
    new_bitmap = sum(1 << bit for bit in have)
    out[72:104] = new_bitmap.to_bytes(32, 'little')
    off = table + 16 * len(have)
    payload = bytearray()
    for bit in sorted(have):
        out += struct.pack('<QQ', off + len(payload), len(have[bit]))
        payload += have[bit]
    return bytes(out + payload)


def crafted(kind: str) -> bytes:
    """The crafted file `kind` (a key of CRAFTED), made from a recording of
    one VM with one vCPU and 4 intervals of kvm:guest_halted."""
    vms = [(4242, 'qemu-vm', 1, 4, 50.0, 1)]
    st = SAMPLE_TYPE | SAMPLE_IDENTIFIER
    if kind in ('forged-name', 'forged-entry'):
        data = bytearray(comm_record(4242, 'qemu-vm'))
        for i in range(4):
            raw = raw_guest_halted(4242, 0, 4_000_000, 2_000_000, 1, 2000000)
            # The last sample comes from the software event.
            data += sample(4242, 4243, 1_000_000_000 + i * 4_000_000, 0, raw,
                           ident=2 if i == 3 else 1)
        tp, sw = attr(sample_type=st), attr(PERF_TYPE_SOFTWARE, st, 0)
        name = 'kvm:guest_halted' if kind == 'forged-name' else 'kvm:kvm_entry'
        # HEADER_EVENT_DESC names the events by their index.
        desc = event_desc([(tp, 'kvm:guest_halted', [1]), (sw, name, [2])])
        feats = [(HEADER_TRACING_DATA, tracing_data()),
                 (HEADER_CPUID, feature_string('AuthenticAMD,23,49,0')),
                 (HEADER_EVENT_DESC, desc)]
        return assemble([(tp, [1]), (sw, [2])], bytes(data), feats)

    blob, _ = build(vms, seed=1)
    data_off, data_size = struct.unpack_from('<QQ', blob, 40)
    data = blob[data_off:data_off + data_size]
    feats = [(HEADER_TRACING_DATA, tracing_data()),
             (HEADER_CPUID, feature_string('AuthenticAMD,23,49,0'))]
    if kind == 'bad-tracing-data':
        feats[0] = (HEADER_TRACING_DATA, tracing_data(page_size=0))
    elif kind == 'skip-past-eof':
        feats[0] = (HEADER_TRACING_DATA, tracing_data(header_event_size=1 << 40))
    elif kind == 'build-id-size':
        rec = struct.pack('<IHHi', RECORD_HEADER_BUILD_ID, 1, 0xffff, -1) + bytes(24)
        feats.append((HEADER_BUILD_ID, rec + b'A' * 0x10000))
    elif kind == 'string-past-section':
        # The host name says it has 64 bytes, its section holds 10 and no
        # NUL: what follows is the next section, the OS release.
        feats.append((HEADER_HOSTNAME, struct.pack('<I', 64) + b'hostnamexx'))
        feats.append((HEADER_OSRELEASE, feature_string('6.12-forged')))
    elif kind == 'string-without-nul':
        feats.append((HEADER_HOSTNAME, struct.pack('<I', 10) + b'hostnamexx'))
    elif kind == 'string-len-max':
        feats.append((HEADER_HOSTNAME, struct.pack('<I', 2**32 - 1) + b'host' + bytes(60)))
        feats.append((HEADER_OSRELEASE, feature_string('6.12') + b'X' * 4096))
    elif kind == 'cpu-past-topology':
        d = bytearray(comm_record(4242, 'qemu-vm'))
        raw = raw_guest_halted(4242, 0, 4_000_000, 2_000_000, 1, 2000000)
        d += sample(4242, 4243, 1_000_000_000, 0, raw)
        d += sample(4242, 4243, 1_004_000_000, 0x7fffffff, raw)
        data = bytes(d)
        topo = (struct.pack('<I', 1) + feature_string('0-1') +
                struct.pack('<I', 2) + feature_string('0') + feature_string('1') +
                struct.pack('<IIII', 0, 0, 1, 0))
        feats += [(HEADER_NRCPUS, struct.pack('<II', 2, 2)),
                  (HEADER_CPU_TOPOLOGY, topo)]
    elif kind == 'mem-topology':
        # Blocks 0-23,32-69 on node 0, 128-199 on node 1: 4 words each,
        # 32 bytes, where bitmap_zalloc(200) gives 28 on 32-bit.
        n0 = (1 << 24) - 1 | ((1 << 38) - 1) << 32
        n1 = ((1 << 72) - 1) << 128
        feats.append((HEADER_MEM_TOPOLOGY, mem_topology(
            [(0, 200, [n0 >> (64 * i) & (2**64 - 1) for i in range(4)]),
             (1, 200, [n1 >> (64 * i) & (2**64 - 1) for i in range(4)])])))
    elif kind == 'mem-bitmap-int-max':
        # bitmap_zalloc() takes an int: 2^32+64 bits allocated 64 bits, 8
        # bytes, and every word of the rest of the file was read into it.
        feats.append((HEADER_MEM_TOPOLOGY, mem_topology(
            [(0, 2**32 + 64, [0x4141414141414141] * 64)])))
    elif kind == 'attr-size-small':
        # read_attr() read size - 64 more bytes: that wraps, and the rest
        # of the file went over the attr on the stack (on 64-bit, read()
        # refused the count).  The file's tail gives it plenty to read.
        a = attr()
        feats.append((HEADER_OSRELEASE, feature_string('6.12') + b'Z' * 65536))
        return assemble([(a[:4] + struct.pack('<I', 8) + a[8:], [1])], data, feats)
    elif kind == 'numa-nr-wrap':
        # 24 * 0x0aaaaaab is 2^32 + 8: 8 bytes on 32-bit, and two whole
        # nodes follow to be written past them.
        node = struct.pack('<IQQ', 0, 1 << 30, 1 << 29) + feature_string('0-1')
        feats.append((HEADER_NUMA_TOPOLOGY, struct.pack('<I', 0x0aaaaaab) + node * 2))
    elif kind == 'cmdline-nr-max':
        feats.append((HEADER_CMDLINE, struct.pack('<I', 2**32 - 1) +
                      feature_string('perf') + feature_string('record')))
    elif kind == 'strings-fail':
        # Each section: a count of 2, one whole string, then a string
        # length of 1000 where the section ends.
        bad = struct.pack('<I', 1000)
        feats += [(HEADER_NRCPUS, struct.pack('<II', 2, 2)),
                  (HEADER_CMDLINE, struct.pack('<I', 2) + feature_string('perf') + bad),
                  (HEADER_CPU_TOPOLOGY, struct.pack('<I', 2) + feature_string('0-1') + bad),
                  (HEADER_PMU_MAPPINGS, struct.pack('<II', 2, 4) + feature_string('cpu') +
                   struct.pack('<I', 1) + bad)]
    elif kind == 'dies-fail':
        # Whole sockets, threads and ids of 2 CPUs, then 2 dies of which
        # the second's length runs past the section.
        feats += [(HEADER_NRCPUS, struct.pack('<II', 2, 2)),
                  (HEADER_CPU_TOPOLOGY, struct.pack('<I', 1) + feature_string('0-1') +
                   struct.pack('<I', 2) + feature_string('0') + feature_string('1') +
                   struct.pack('<IIII', 0, 0, 1, 0) +
                   struct.pack('<I', 2) + feature_string('0') + struct.pack('<I', 1000))]
    elif kind == 'no-raw':
        # A kvm:kvm_entry tracepoint (its vcpu_id field is what kvm stat
        # reads first), whose attr and samples have no PERF_SAMPLE_RAW.
        fmt = FORMAT.read_text().replace('ID: @ID@', f'ID: {EVENT_ID}')
        fmt = fmt.replace('name: guest_halted', 'name: kvm_entry')
        st = SAMPLE_TID | SAMPLE_TIME | SAMPLE_CPU | SAMPLE_PERIOD
        d = bytearray(comm_record(4242, 'qemu-vm'))
        for i in range(4):
            body = struct.pack('<IIQIIQ', 4242, 4243, 1_000_000_000 + i * 4_000_000, 0, 0, 1)
            d += struct.pack('<IHH', RECORD_SAMPLE, 1, 8 + len(body)) + body
        feats[0] = (HEADER_TRACING_DATA, tracing_data_of([fmt.encode()]))
        return assemble([(attr(sample_type=st), [1])], bytes(d), feats)
    elif kind == 'build-id-size-max':
        rec = bytearray(build_id_record(2, 4242, bytes(range(1, 21)), '/usr/bin/qemu-vm'))
        rec[32] = 255
        feats.append((HEADER_BUILD_ID, bytes(rec) +
                      build_id_record(2, 4242, bytes(range(21, 41)), '/usr/bin/other')))
    elif kind == 'ids-past-eof':
        out = bytearray(assemble([(attr(), [1])], data, feats))
        # The attr's ids section: (offset, size) after its ATTR_SIZE bytes.
        struct.pack_into('<Q', out, 104 + ATTR_SIZE + 8, 8 * (2**28 + 1))
        return bytes(out)
    elif kind == 'data-past-eof':
        # Samples of a software event, which needs no tracing data, and no
        # feature sections (their table would be past the file): the data
        # is the end of the file, padded with 8-byte FINISHED_ROUND records
        # to end on a page, and claims 1 MiB more.
        out = bytearray(assemble([(attr(PERF_TYPE_SOFTWARE, SAMPLE_TYPE, 0), [1])], data, []))
        pad = -len(out) % 4096
        out += struct.pack('<IHH', PERF_RECORD_FINISHED_ROUND, 0, 8) * (pad // 8)
        struct.pack_into('<Q', out, 48, len(out) - data_off + (1 << 20))
        return bytes(out)
    elif kind.startswith('data-'):
        # The data section's size in the file header.  The feature table,
        # which perf looks for right after the data, moves there (its
        # entries keep pointing to the sections).
        out = bytearray(assemble([(attr(), [1])], data, feats))
        last = len(data) - len(sample(4242, 4243, 0, 0, raw_guest_halted(
            4242, 0, 4_000_000, 2_000_000, 1, 2000000)))
        size = {'data-cut-short': last + 4, 'data-size-small': 5,
                'data-size-max': 2**64 - 1}.get(kind)
        if size is None:
            raise ValueError(kind)
        table_len = 16 * len(feats)
        table = out[data_off + len(data):data_off + len(data) + table_len]
        new_off = (data_off + size) % 2**64
        out[new_off:new_off + table_len] = table
        struct.pack_into('<Q', out, 48, size)
        return bytes(out)
    else:
        raise ValueError(kind)
    return assemble([(attr(), [1])], data, feats)


def parse_vm(s: str) -> tuple[int, str, int, int, float, int]:
    pid, comm, vcpus, intervals, pct, source = s.split(':')
    src = {'mperf': 1, 'sampled': 2}[source]
    return int(pid), comm, int(vcpus), int(intervals), float(pct), src


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('out', type=Path)
    ap.add_argument('--vm', action='append', type=parse_vm, default=[],
                    help='PID:COMM:VCPUS:INTERVALS:HALTED_PCT:mperf|sampled')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--event', default='kvm:guest_halted', help='SYSTEM:NAME of the tracepoint')
    ap.add_argument('--software', action='store_true', help='software event samples')
    ap.add_argument('--kvm', type=Path, metavar='FORMATS_DIR',
                    help='write a recording of every kvm stat class instead, with the '
                    'format files of DIR/kvm_*/format (/sys/kernel/tracing/events/kvm)')
    ap.add_argument('--full-header', action='store_true',
                    help='add every feature section perf reads without a library '
                    '(build-ids, topologies, caches, PMU caps, memory bitmaps...)')
    ap.add_argument('--print-fmt', type=Path, metavar='TREE',
                    help="print the kernel's 'print fmt:' line of kvm:guest_halted from TREE")
    ap.add_argument('--crafted', choices=sorted(CRAFTED),
                    help='write this crafted file instead: ' +
                    '; '.join(f'{k}: {v}' for k, v in CRAFTED.items()))
    args = ap.parse_args()
    if args.print_fmt:
        print(kernel_print_fmt(args.print_fmt))
        return 0
    if args.crafted:
        args.out.write_bytes(crafted(args.crafted))
        return 0
    full = header_features() if args.full_header else None
    if args.kvm:
        blob = kvm_recording({n: (args.kvm / n / 'format').read_text() for n in KVM_EVENTS})
        args.out.write_bytes(add_features(blob, full) if full else blob)
        return 0
    blob, sums = build(args.vm, args.seed, event=args.event, software=args.software)
    args.out.write_bytes(add_features(blob, full) if full else blob)
    for k, v in sorted(sums.items()):
        print(f'{k}={v}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
