# gtime-halted: guest halted-time accounting for Linux KVM hosts.
#
# 'make help' lists the targets.  Everything built goes to build/ (ignored
# by git); the kernel tree is build/linux, prepared from Debian's
# linux-source-6.12 or KSRC=/path/to/linux-6.12.y.

SHELL      := /bin/bash
PYTHON     := /usr/bin/python3
PYTEST     := $(PYTHON) -m pytest
KSRC       ?=
FORCE      ?=
JOBS       ?= $(shell nproc)
TESTS      ?= tests
PYTEST_ARGS ?=

export KSRC JOBS

.DEFAULT_GOAL := help

.PHONY: help deps tree export-series kernel kernel-base kernel-debug debug-test kernel-kcsan kcsan-test \
	perf perf32 selftests \
	selftests-all regression-prep initramfs vm qemu \
	test demo bench bisect-check checkpatch clean distclean plugin fuzz fuzz32

help: ## List the targets
	@echo "gtime-halted: make TARGET"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "Variables: KSRC=<6.12.y tree>  JOBS=<n>  FORCE=1 (tree)  TESTS=<pytest paths>"

deps: ## Install the Debian packages every target needs (as root)
	@scripts/deps.sh all source

tree: ## Prepare build/linux: 6.12 base commit + kernel/ and tools-perf/ series
	@scripts/deps.sh tree $(if $(KSRC),,source)
	@scripts/prepare-tree.sh $(if $(FORCE),--force)

export-series: ## Write build/linux's commits back to kernel/ and tools-perf/
	@scripts/export-series.sh

kernel: tree ## Build build/bzImage (tinyconfig + kernel/configs/*.config)
	@scripts/deps.sh kernel
	@scripts/build-kernel.sh

kernel-base: tree ## Build the unpatched base with the same config (build/bzImage-base)
	@scripts/deps.sh kernel
	@scripts/build-kernel.sh --base

perf: tree ## Build tools/perf from build/linux into build/perf
	@scripts/deps.sh perf
	@scripts/build-perf.sh

perf32: tree ## Build a minimal 32-bit (gcc -m32) perf into build/perf32
	@scripts/deps.sh perf32
	@scripts/build-perf32.sh

selftests: tree ## Build the KVM selftests in tests/kvm-selftests.list (static)
	@scripts/deps.sh kernel
	@scripts/build-selftests.sh

selftests-all: tree ## Build every x86_64 KVM selftest but perf/stress (static)
	@scripts/deps.sh kernel
	@scripts/build-selftests.sh --all

regression-prep: kernel-base selftests-all ## What the upstream regression suite needs

plugin: ## Build the libtraceevent plugin for kvm:guest_halted (build/plugins/)
	@scripts/deps.sh perf
	@scripts/build-plugin.sh

initramfs: perf selftests plugin ## Build build/initramfs.cpio (busybox, perf, tests)
	@scripts/deps.sh vm
	@scripts/build-initramfs.sh

vm: kernel initramfs qemu ## Everything the test VM boots (and the QEMU with the APERF/MPERF model)

qemu: ## Build build/qemu/qemu-system-x86_64: Debian's QEMU 7.2 + qemu/series (APERF/MPERF model)
	@scripts/deps.sh qemu
	@scripts/build-qemu.sh

test: vm regression-prep perf32 ## Run the test suite (pytest, boots the VM under QEMU TCG)
	@scripts/deps.sh test
	@scripts/deps.sh plot
	GH_PERF32=$${GH_PERF32:-$(CURDIR)/build/perf32/perf} $(PYTEST) -v -ra $(PYTEST_ARGS) $(TESTS)

demo: vm ## Show a halted nested guest counted 100% busy, and what the kernel reports
	@scripts/deps.sh plot
	@$(PYTHON) scripts/demo.py

bench: vm kernel-base ## Exit cost of accounting (on/off, one boot), counter reads per exit; perf kvm stat halted; load balancing around halted vCPUs; scheduler cost of the switch; wake-up latency beside halted vCPUs and of an I/O thread; a stressor sweep beside a halting and a busy VM; noise of the halted share
	@$(PYTHON) scripts/bench.py
	@$(PYTHON) scripts/perf-bench.py
	@$(PYTHON) scripts/lb-bench.py
	@$(PYTHON) scripts/sched-bench.py
	@$(PYTHON) scripts/wake-bench.py
	@$(PYTHON) scripts/sweep-bench.py
	@$(PYTHON) scripts/share-bench.py

fuzz: vm ## Fuzz every perf kvm stat class and perf script (ASan+UBSan perf) with 1000 mutated recordings
	@$(PYTHON) scripts/fuzz-perf-kvm-stat.py

fuzz32: tree ## Fuzz a 32-bit ASan+UBSan perf (header, report, script) with 1000 mutated recordings
	@scripts/deps.sh perf32
	@$(PYTHON) scripts/fuzz-perf-kvm-stat.py --bits 32

kernel-debug: tree ## Build build/bzImage-debug: the test kernel with lockdep, KASAN, UBSAN
	@scripts/deps.sh kernel
	@scripts/build-kernel.sh --debug

debug-test: kernel-debug initramfs ## Run the VM tests on the debug kernel; any kernel report fails
	@scripts/deps.sh test
	GH_KERNEL=$(CURDIR)/build/bzImage-debug GH_CONSOLE_CHECK=1 \
		$(PYTEST) -v -ra -k 'not ground_truth and not polls' $(PYTEST_ARGS) \
		tests/test_guest_halted.py tests/test_vm.py

kernel-kcsan: tree ## Build build/bzImage-kcsan: the test kernel with KCSAN
	@scripts/deps.sh kernel
	@scripts/build-kernel.sh --kcsan

kcsan-test: kernel-kcsan initramfs ## Run the VM tests on the KCSAN kernel; a data race in the series' code fails
	@scripts/deps.sh test
	GH_KERNEL=$(CURDIR)/build/bzImage-kcsan GH_KCSAN_CHECK=1 \
		$(PYTEST) -v -ra -k 'not ground_truth and not polls and not proc_stat_field_53' \
		$(PYTEST_ARGS) \
		tests/test_guest_halted.py tests/test_spoof.py tests/test_sched_halted.py

bisect-check: kernel ## Build vmlinux at every patch of the series (slow)
	@scripts/bisect-check.sh

checkpatch: tree ## Run checkpatch.pl --strict on every patch of the series
	@scripts/deps.sh test
	@scripts/checkpatch.sh

clean: ## Remove build outputs but keep build/linux and its commits
	rm -rf build/kernel build/kernel-base build/bzImage-base build/perf build/perf32 build/selftests \
		build/kernel-debug build/bzImage-debug build/kernel-kcsan build/bzImage-kcsan \
		build/headers build/headers-obj \
		build/guest build/initramfs build/initramfs.cpio build/bzImage build/vm-runs

distclean: ## Remove build/ entirely (refuses if build/linux has unexported work)
	@if [ -d build/linux/.git ] && [ -f build/.tree-state ]; then \
		. build/.tree-state; \
		if [ "$$(git -C build/linux rev-parse HEAD)" != "$$applied_head" ] || \
		   [ -n "$$(git -C build/linux status --porcelain)" ]; then \
			echo "error: build/linux has work not exported; run 'make export-series' first" >&2; \
			exit 1; \
		fi; \
	fi
	rm -rf build
