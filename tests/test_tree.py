"""The prepared tree, the series round trip, and bad input to the tree tools."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, TOP

TREE = BUILD / 'linux'


def git(*args: str, cwd: Path = TREE) -> str:
    return subprocess.run(['git', *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def series(top: Path, d: str) -> list[str]:
    f = top / d / 'series'
    if not f.exists():
        return []
    return [ln.strip() for ln in f.read_text().splitlines()
            if ln.strip() and not ln.startswith('#')]


def patch_subject(path: Path) -> str:
    """The commit subject 'git am' makes of a format-patch file."""
    lines = path.read_text(errors='replace').splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith('Subject: '):
            subj = ln[len('Subject: '):]
            for cont in lines[i + 1:]:
                if not cont.startswith(' '):
                    break
                subj += cont
            if subj.startswith('['):
                subj = subj[subj.index(']') + 1:]
            return subj.strip()
    raise AssertionError(f'{path} has no Subject')


def run_script(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOP / 'scripts' / name), *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=600)


def test_tree_is_612_base_plus_series() -> None:
    assert TREE.joinpath('.git').is_dir(), 'build/linux is not prepared: run "make tree"'
    mk = TREE.joinpath('Makefile').read_text()
    assert 'VERSION = 6\n' in mk and 'PATCHLEVEL = 12\n' in mk
    base_files = int(git('ls-tree', '-r', '--name-only', 'gtime-base').count('\n'))
    assert base_files > 50000, 'the base commit does not hold a whole kernel tree'
    # New files must be visible to git, or commits silently miss them.
    ignored = subprocess.run(['git', 'check-ignore', '-q', 'arch/x86/kvm/new_file.c'],
                             cwd=TREE)
    assert ignored.returncode == 1, 'build/linux ignores new source files'
    subjects = git('log', '--reverse', '--format=%s', 'gtime-base..HEAD').splitlines()
    want = [patch_subject(TOP / d / p) for d in ('kernel', 'sched', 'tools-perf') for p in series(TOP, d)]
    assert subjects == want, 'build/linux does not hold exactly kernel/, sched/ and tools-perf/series'


def test_export_round_trip_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / 'export'
    for d in ('kernel', 'sched', 'tools-perf'):
        (out / d).mkdir(parents=True)
    res = run_script('export-series.sh', {'SERIES_TOP': str(out)})
    assert res.returncode == 0, res.stderr
    for d in ('kernel', 'sched', 'tools-perf'):
        names = series(TOP, d)
        assert series(out, d) == names
        assert (out / d / 'series').read_bytes() == (TOP / d / 'series').read_bytes()
        for p in names:
            assert filecmp.cmp(out / d / p, TOP / d / p, shallow=False), f'{d}/{p} differs'


def fake_tree(path: Path, version: str) -> Path:
    v, p, s = version.split('.')
    (path / 'arch/x86/kvm').mkdir(parents=True)
    (path / 'Makefile').write_text(f'VERSION = {v}\nPATCHLEVEL = {p}\nSUBLEVEL = {s}\n')
    (path / 'arch/x86/kvm/x86.c').write_text('int x = 1;\nint y = 2;\nint z = 3;\n')
    return path


def test_ksrc_not_612_is_refused(tmp_path: Path) -> None:
    ksrc = fake_tree(tmp_path / 'linux-6.11', '6.11.3')
    res = run_script('prepare-tree.sh', {'KSRC': str(ksrc), 'BUILD_DIR': str(tmp_path / 'b')})
    assert res.returncode != 0
    assert 'is Linux 6.11.3; this series is for Linux 6.12.y' in res.stderr


def test_ksrc_not_a_tree_is_refused(tmp_path: Path) -> None:
    res = run_script('prepare-tree.sh', {'KSRC': str(tmp_path), 'BUILD_DIR': str(tmp_path / 'b')})
    assert res.returncode != 0
    assert 'is not a Linux source tree' in res.stderr


def test_missing_tarball_is_reported(tmp_path: Path) -> None:
    env = {'TARBALL': str(tmp_path / 'none.tar.xz'), 'BUILD_DIR': str(tmp_path / 'b'), 'KSRC': ''}
    res = run_script('prepare-tree.sh', env)
    assert res.returncode != 0
    assert 'none.tar.xz is missing' in res.stderr
    assert 'apt-get install linux-source-6.12' in res.stderr


def test_patch_that_does_not_apply_is_named(tmp_path: Path) -> None:
    ksrc = fake_tree(tmp_path / 'linux', '6.12.99')
    top = tmp_path / 'proj'
    (top / 'kernel').mkdir(parents=True)
    (top / 'tools-perf').mkdir()
    good = ('From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n'
            'From: A U Thor <a@example.org>\nDate: Sat, 1 Jan 2000 00:00:00 +0000\n'
            'Subject: [PATCH] KVM: x86: Change y\n\nWhy.\n---\n'
            'diff --git a/arch/x86/kvm/x86.c b/arch/x86/kvm/x86.c\n'
            '--- a/arch/x86/kvm/x86.c\n+++ b/arch/x86/kvm/x86.c\n'
            '@@ -1,3 +1,3 @@\n int x = 1;\n-int y = 2;\n+int y = 20;\n int z = 3;\n')
    bad = good.replace('Change y', 'Change z').replace('-int y = 2;\n+int y = 20;\n int z = 3;',
                                                       ' int y = 5;\n-int z = 3;\n+int z = 30;')
    (top / 'kernel/0001-good.patch').write_text(good)
    (top / 'kernel/0002-bad.patch').write_text(bad)
    (top / 'kernel/series').write_text('0001-good.patch\n0002-bad.patch\n')
    (top / 'tools-perf/series').write_text('')
    env = {'KSRC': str(ksrc), 'BUILD_DIR': str(tmp_path / 'b'), 'SERIES_TOP': str(top)}
    res = run_script('prepare-tree.sh', env)
    assert res.returncode != 0
    assert 'kernel/0002-bad.patch does not apply' in res.stderr
    assert 'rejected hunk(s) for arch/x86/kvm/x86.c.rej' in res.stderr
    assert '+int z = 30;' in res.stderr
    # The good patch stays applied and the tree is left clean.
    assert 'int y = 20;' in (tmp_path / 'b/linux/arch/x86/kvm/x86.c').read_text()
    assert git('status', '--porcelain', cwd=tmp_path / 'b/linux') == ''
    # The user's KSRC is never modified.
    assert not (ksrc / '.git').exists()
    assert 'int y = 2;' in (ksrc / 'arch/x86/kvm/x86.c').read_text()


def test_unexported_work_is_never_thrown_away(tmp_path: Path) -> None:
    ksrc = fake_tree(tmp_path / 'linux', '6.12.99')
    top = tmp_path / 'proj'
    for d in ('kernel', 'tools-perf'):
        (top / d).mkdir(parents=True)
        (top / d / 'series').write_text('')
    env = {'KSRC': str(ksrc), 'BUILD_DIR': str(tmp_path / 'b'), 'SERIES_TOP': str(top)}
    assert run_script('prepare-tree.sh', env).returncode == 0
    tree = tmp_path / 'b/linux'
    (tree / 'arch/x86/kvm/x86.c').write_text('int x = 42;\n')
    git('commit', '-qam', 'KVM: x86: Local work', cwd=tree)
    # A changed series would re-apply on the base; it must refuse instead.
    (top / 'kernel/series').write_text('# changed\n')
    res = run_script('prepare-tree.sh', env)
    assert res.returncode != 0
    assert 'KVM: x86: Local work' in res.stderr and 'make export-series' in res.stderr
    assert (tree / 'arch/x86/kvm/x86.c').read_text() == 'int x = 42;\n'
    # Exported, the work becomes the series, and a fresh tree re-creates it.
    assert run_script('export-series.sh', env).returncode == 0
    assert (top / 'kernel/series').read_text() == '0001-KVM-x86-Local-work.patch\n'
    shutil.rmtree(tmp_path / 'b')
    assert run_script('prepare-tree.sh', env).returncode == 0
    assert (tree / 'arch/x86/kvm/x86.c').read_text() == 'int x = 42;\n'


def test_kernel_config_has_what_the_tests_need() -> None:
    cfg = (BUILD / 'kernel' / '.config').read_text()
    for opt in ('SMP', 'ACPI', 'KVM', 'KVM_AMD', 'KVM_INTEL', 'TRACEPOINTS', 'PERF_EVENTS',
                'KUNIT', 'CGROUPS', 'FAIR_GROUP_SCHED', 'NO_HZ_FULL', 'BLK_DEV_INITRD',
                'DEVTMPFS', '9P_FS', 'NET_9P_VIRTIO'):
        assert f'\nCONFIG_{opt}=y\n' in cfg, f'CONFIG_{opt} is not built in'
    nr = int(cfg.split('\nCONFIG_NR_CPUS=')[1].split('\n')[0])
    assert nr >= 4


def test_series_passes_checkpatch_strict() -> None:
    res = subprocess.run([str(TOP / 'scripts' / 'checkpatch.sh')], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    n = sum(len(series(TOP, d)) for d in ('kernel', 'sched', 'tools-perf'))
    assert f'checkpatch: {n} patch(es) clean' in res.stdout
    # spdxcheck.py must have run: its Python modules are installed.
    assert 'Traceback' not in res.stderr, res.stderr


@pytest.fixture(scope='module')
def kconfig_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder, so that Kconfig's own tools are built once."""
    return tmp_path_factory.mktemp('kconfig')


@pytest.mark.parametrize('kvm, kunit, want', [
    ('y', 'm', None),    # kunit.ko symbols cannot be linked into vmlinux
    ('y', 'y', 'y'),
    ('m', 'm', 'y'),     # both modules: the tests build into kvm.ko
])
def test_kunit_config_links_with_kvm(kconfig_out: Path, kvm: str, kunit: str,
                                     want: str | None) -> None:
    """KVM_GUEST_HALTED_KUNIT_TEST is offered only where the tests can link:
    with KVM=y and KUNIT=m the kernel used to fail to link.  Resolved with
    the tree's own Kconfig, on the test kernel's fragment."""
    frag = kconfig_out / 'kunit.config'
    frag.write_text(f'CONFIG_KVM={kvm}\nCONFIG_KUNIT={kunit}\nCONFIG_MODULES=y\n'
                    'CONFIG_KVM_GUEST_HALTED_KUNIT_TEST=y\n')
    out = kconfig_out
    make = ['make', '-s', '-C', str(TREE), f'O={out}']
    subprocess.run([*make, 'tinyconfig'], check=True, capture_output=True, timeout=300)
    subprocess.run([str(TREE / 'scripts/kconfig/merge_config.sh'), '-m', '-O', str(out),
                    str(out / '.config'), str(TOP / 'kernel/configs/gtime-halted.config'),
                    str(frag)], check=True, capture_output=True, cwd=out, timeout=300)
    subprocess.run([*make, 'olddefconfig'], check=True, capture_output=True, timeout=300)
    config = (out / '.config').read_text()
    assert f'CONFIG_KVM={kvm}\n' in config and f'CONFIG_KUNIT={kunit}\n' in config
    if want:
        assert f'CONFIG_KVM_GUEST_HALTED_KUNIT_TEST={want}\n' in config
    else:
        assert 'CONFIG_KVM_GUEST_HALTED_KUNIT_TEST=' not in config


KVM_DIR = TREE / 'arch/x86/kvm'
FILE_SCOPE_VAR = re.compile(
    r'^(?:static\s+)?(?:DEFINE_\w+\((\w+)\)|(?:bool|u32|u64|int)\s+(\w+)\s*(?:=[^;]*)?;)',
    re.M)
STATE_WRITERS = re.compile(
    r'\b(static_branch_\w+|static_key_(?:enable|disable|slow_inc|slow_dec)|'
    r'guest_halted_(?:update|set|source_set)|kvm_guest_halted_init|'
    r'account_guest_\w+|arch_freq_tick_counters_\w+|set_cpus_allowed_ptr)\s*\(')
TIME_WRITE = re.compile(r'(?:->|\.)(?:gtime|gtime_halted|utime|stime)\b\s*(?:[-+|]?=[^=]|\+\+|--)')


def kunit_state_writes(test_src: str, code_src: str) -> list[str]:
    """What a KUnit file does to the running kernel's state: assignments to,
    or addresses taken of, the file-scope variables of the code it tests;
    calls that switch static keys, accounting or the tick; writes to a
    task's times."""
    found = []
    names = {a or b for a, b in FILE_SCOPE_VAR.findall(code_src)}
    for name in sorted(names):
        if re.search(rf'(?<![\w.>]){name}\s*(?:[-+|]?=[^=]|\+\+|--)|&{name}\b|'
                     rf'WRITE_ONCE\({name}\b', test_src):
            found.append(name)
    found += [m.group(1) for m in STATE_WRITERS.finditer(test_src)]
    found += [m.group(0) for m in TIME_WRITE.finditer(test_src)]
    return found


def test_kvm_kunit_suite_leaves_the_running_kvm_alone() -> None:
    """The KVM KUnit cases test arithmetic on state of their own: they
    write none of guest_halted.c's globals (the switch, the source, the
    ratio, the generation, the static key), switch nothing, and write no
    task's times, so a KUnit run on a host with VMs perturbs none of
    them.  The check itself finds such writes in a file that makes them."""
    code = (KVM_DIR / 'guest_halted.c').read_text()
    assert kunit_state_writes((KVM_DIR / 'guest_halted_test.c').read_text(), code) == []
    names = {a or b for a, b in FILE_SCOPE_VAR.findall(code)}
    assert {'guest_halted', 'guest_halted_source', 'mperf_tsc_ratio',
            'kvm_guest_halted_gen', 'kvm_guest_halted_enabled'} <= names, names
    bad = ('guest_halted_source_req = 1;\nmperf_tsc_ratio += 2;\n'
           'static_branch_enable(&kvm_guest_halted_enabled);\n'
           'current->gtime += 5;\nguest_halted_update(true);\n')
    assert kunit_state_writes(bad, code) == [
        'guest_halted_source_req', 'kvm_guest_halted_enabled', 'mperf_tsc_ratio',
        'static_branch_enable', 'guest_halted_update', '->gtime += ']
