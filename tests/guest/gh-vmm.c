// SPDX-License-Identifier: GPL-2.0
/*
 * gh-vmm: a minimal KVM VMM used by the gtime-halted harness, its tests and
 * the demo.  It runs inside the QEMU test VM (L1) and starts a nested
 * real-mode guest (L2).
 *
 *   gh-vmm exits N [passthrough]
 *                           run a guest that does N port-I/O exits, then
 *                           signals the end on another port; with
 *                           "passthrough", HLT and PAUSE do not exit
 *   gh-vmm kexits N [passthrough]
 *                           the same with N CPUID exits, which KVM handles
 *                           without returning to user space (one KVM_RUN)
 *   gh-vmm halt SECONDS     run a guest that halts with HLT passed through
 *                           (KVM_CAP_X86_DISABLE_EXITS) for SECONDS
 *   gh-vmm spoof SECONDS hlt|mwait accessed|unaccessed|evicted
 *                           run a guest that never halts but busy-loops on
 *                           code right after the bytes of HLT (F4) or MWAIT
 *                           (0F 01 C9), with that instruction passed
 *                           through, in 32-bit paging.  The page holding
 *                           those bytes is one the guest never touches
 *                           again: its PTE's Accessed bit set, or clear,
 *                           or the page dropped from the host (evicted).
 *                           Prints whether the Accessed bit and the page
 *                           are still so afterwards.
 *   gh-vmm iothread SECONDS PERIOD_US CPU [idle]
 *                           a halting guest (HLT passed through) on CPU,
 *                           given an interrupt every PERIOD_US, whose
 *                           handler writes to a port that KVM turns into an
 *                           eventfd signal (KVM_IOEVENTFD), as a VMM's
 *                           ioeventfd does: the vCPU's exit wakes this
 *                           VMM's I/O thread from inside KVM_RUN.  The I/O
 *                           thread starts on CPU and may then run anywhere.
 *                           Prints the I/O thread's wake-up latency (from
 *                           the injection to it running, p50, p99, max in
 *                           us) and the share of its wake-ups on the
 *                           vCPU's CPU, over SECONDS after a first second
 *                           in which the host learns the vCPU's halted
 *                           share.  With "idle" the vCPU thread alone is
 *                           SCHED_IDLE.
 *   gh-vmm duty SECONDS PERIOD_US BUSY_PERCENT [NVCPUS [CPU]]
 *                           the same guest with NVCPUS vCPUs (1), each
 *                           spinning on the TSC for BUSY_PERCENT of each
 *                           period from its interrupt and halted the rest:
 *                           a guest at a known halted fraction.  vCPU i
 *                           runs on CPU + i if CPU is given, else anywhere.
 *                           Prints each vCPU thread's run-queue wait as a
 *                           share of the run, its halted share by KVM's
 *                           guest_halted_ns and its migrations.
 *
 * Results are printed as "key=value" lines so tests can parse them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define GUEST_MEM_SIZE	0x10000
#define IO_PORT		0x10
#define DONE_PORT	0x11

/* 1: out 0x10, al; dec ecx; jnz 1b; out 0x11, al; hlt */
static const uint8_t exits_code[] = {
	0xe6, IO_PORT, 0x66, 0x49, 0x75, 0xfa, 0xe6, DONE_PORT, 0xf4
};
/* 1: cpuid; dec esi; jnz 1b; out 0x11, al; hlt */
static const uint8_t kexits_code[] = {
	0x0f, 0xa2, 0x66, 0x4e, 0x75, 0xfa, 0xe6, DONE_PORT, 0xf4
};
/* cli; 1: hlt; jmp 1b */
static const uint8_t halt_code[] = { 0xfa, 0xf4, 0xeb, 0xfd };

struct vm {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	uint8_t *mem;
};

static void die(const char *what)
{
	fprintf(stderr, "gh-vmm: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void vm_create(struct vm *v, const uint8_t *code, size_t len,
		      uint64_t disable_exits)
{
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	int run_size;

	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0)
		die("open /dev/kvm");
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
	if (v->vm < 0)
		die("KVM_CREATE_VM");

	if (disable_exits) {
		struct kvm_enable_cap cap = {
			.cap = KVM_CAP_X86_DISABLE_EXITS,
			.args[0] = disable_exits,
		};
		int allowed = ioctl(v->vm, KVM_CHECK_EXTENSION,
				    KVM_CAP_X86_DISABLE_EXITS);

		if ((allowed & disable_exits) != disable_exits) {
			fprintf(stderr, "gh-vmm: KVM_CAP_X86_DISABLE_EXITS allows 0x%x, need 0x%llx\n",
				allowed, (unsigned long long)disable_exits);
			exit(4);
		}
		if (ioctl(v->vm, KVM_ENABLE_CAP, &cap))
			die("KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS)");
	}

	/* Private, so that a page mapped afresh is not in the page cache. */
	v->mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v->mem == MAP_FAILED)
		die("mmap guest memory");
	if (len)
		memcpy(v->mem, code, len);
	region = (struct kvm_userspace_memory_region) {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = GUEST_MEM_SIZE,
		.userspace_addr = (uintptr_t)v->mem,
	};
	if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &region))
		die("KVM_SET_USER_MEMORY_REGION");
	/* Intel needs a TSS for real mode; harmless on AMD. */
	if (ioctl(v->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL))
		die("KVM_SET_TSS_ADDR");

	v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
	if (v->vcpu < 0)
		die("KVM_CREATE_VCPU");
	run_size = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->vcpu, 0);
	if (v->run == MAP_FAILED)
		die("mmap kvm_run");

	if (ioctl(v->vcpu, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(v->vcpu, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0;
	regs.rflags = 0x2;
	regs.rcx = 0;
	if (ioctl(v->vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
}

static void set_rcx(struct vm *v, uint64_t rcx)
{
	struct kvm_regs regs;

	if (ioctl(v->vcpu, KVM_GET_REGS, &regs))
		die("KVM_GET_REGS");
	regs.rcx = rcx;
	if (ioctl(v->vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
}

/*
 * Fields 14 (utime), 15 (stime), 43 (gtime) and 53 (gtime_halted) of this
 * thread's stat line, in ticks.  *ghalted is -1 on kernels without field 53.
 */
static int read_task_stat(unsigned long *utime, unsigned long *stime,
			  unsigned long *gtime, long *ghalted)
{
	char path[64], buf[1024], *p;
	int fd, n, field;

	snprintf(path, sizeof(path), "/proc/self/task/%ld/stat",
		 (long)syscall(SYS_gettid));
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* Skip "pid (comm)": comm may hold spaces, so find the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	p += 2;
	*ghalted = -1;
	for (field = 3; *p; field++) {
		unsigned long val = strtoul(p, NULL, 10);

		if (field == 14)
			*utime = val;
		else if (field == 15)
			*stime = val;
		else if (field == 43)
			*gtime = val;
		else if (field == 53)
			*ghalted = val;
		p = strchr(p, ' ');
		if (!p)
			break;
		p++;
	}
	return 0;
}

/*
 * Read one vCPU statistic through KVM's binary stats interface.  Returns
 * -1 when the kernel has no statistic of that name.
 */
static long long read_vcpu_stat(struct vm *v, const char *name)
{
	struct kvm_stats_header hdr;
	struct kvm_stats_desc *desc;
	long long val = -1;
	size_t desc_size;
	unsigned int i;
	int fd;

	fd = ioctl(v->vcpu, KVM_GET_STATS_FD, NULL);
	if (fd < 0)
		die("KVM_GET_STATS_FD");
	if (pread(fd, &hdr, sizeof(hdr), 0) != sizeof(hdr))
		die("read stats header");
	desc_size = sizeof(*desc) + hdr.name_size;
	desc = malloc(desc_size);
	if (!desc)
		die("malloc");
	for (i = 0; i < hdr.num_desc; i++) {
		uint64_t data;

		if (pread(fd, desc, desc_size, hdr.desc_offset + i * desc_size) !=
		    (ssize_t)desc_size)
			die("read stats descriptor");
		if (strcmp(desc->name, name))
			continue;
		if (pread(fd, &data, sizeof(data), hdr.data_offset + desc->offset) !=
		    sizeof(data))
			die("read stats data");
		val = data;
		break;
	}
	free(desc);
	close(fd);
	return val;
}

static int cmd_exits(unsigned long n, int passthrough)
{
	unsigned long io_exits = 0, other = 0;
	double t0, t1;
	struct vm v;

	if (!n) {
		fprintf(stderr, "gh-vmm: exits: N must be at least 1\n");
		return 2;
	}
	vm_create(&v, exits_code, sizeof(exits_code), passthrough ?
		  KVM_X86_DISABLE_EXITS_HLT | KVM_X86_DISABLE_EXITS_PAUSE : 0);
	set_rcx(&v, n);
	t0 = now();
	for (;;) {
		if (ioctl(v.vcpu, KVM_RUN, 0) && errno != EINTR)
			die("KVM_RUN");
		if (v.run->exit_reason == KVM_EXIT_IO &&
		    v.run->io.port == IO_PORT) {
			io_exits++;
			continue;
		}
		if (v.run->exit_reason == KVM_EXIT_IO &&
		    v.run->io.port == DONE_PORT)
			break;
		if (v.run->exit_reason == KVM_EXIT_INTR) {
			other++;
			continue;
		}
		fprintf(stderr, "gh-vmm: unexpected exit reason %u\n",
			v.run->exit_reason);
		return 1;
	}
	t1 = now();
	printf("io_exits=%lu\n", io_exits);
	printf("other_exits=%lu\n", other);
	printf("seconds=%.6f\n", t1 - t0);
	printf("us_per_exit=%.2f\n", (t1 - t0) * 1e6 / io_exits);
	printf("kvm_exits=%lld\n", read_vcpu_stat(&v, "exits"));
	return io_exits == n ? 0 : 1;
}

/* In-kernel exits: one KVM_RUN for all N of them (but for signals). */
static int cmd_kexits(unsigned long n, int passthrough)
{
	unsigned long runs = 0;
	struct kvm_regs regs;
	double t0, t1;
	struct vm v;

	if (!n) {
		fprintf(stderr, "gh-vmm: kexits: N must be at least 1\n");
		return 2;
	}
	vm_create(&v, kexits_code, sizeof(kexits_code), passthrough ?
		  KVM_X86_DISABLE_EXITS_HLT | KVM_X86_DISABLE_EXITS_PAUSE : 0);
	if (ioctl(v.vcpu, KVM_GET_REGS, &regs))
		die("KVM_GET_REGS");
	regs.rsi = n;
	if (ioctl(v.vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
	t0 = now();
	for (;;) {
		runs++;
		if (ioctl(v.vcpu, KVM_RUN, 0) && errno != EINTR)
			die("KVM_RUN");
		if (v.run->exit_reason == KVM_EXIT_IO &&
		    v.run->io.port == DONE_PORT)
			break;
		if (v.run->exit_reason == KVM_EXIT_INTR)
			continue;
		fprintf(stderr, "gh-vmm: unexpected exit reason %u\n",
			v.run->exit_reason);
		return 1;
	}
	t1 = now();
	printf("cpuid_exits=%lu\n", n);
	printf("kvm_run_calls=%lu\n", runs);
	printf("seconds=%.6f\n", t1 - t0);
	printf("us_per_exit=%.2f\n", (t1 - t0) * 1e6 / n);
	printf("kvm_exits=%lld\n", read_vcpu_stat(&v, "exits"));
	return 0;
}

static volatile sig_atomic_t alarmed;

static void on_alarm(int sig)
{
	(void)sig;
	alarmed = 1;
}

/* This thread's stat fields, as read_task_stat() reads them. */
struct task_stat {
	unsigned long utime, stime, gtime;
	long ghalted;
};

/*
 * Run the vCPU for @seconds, until SIGALRM interrupts KVM_RUN, with this
 * thread's stat fields before in @before and after in @after, and the wall
 * time and KVM_RUN calls in *@wall and *@runs.  Only KVM_EXIT_INTR may end
 * a KVM_RUN: the guest never exits on its own.  A run that another signal
 * interrupts (a stop and a continue) goes on.  Returns 0, or 1 after an
 * unexpected exit.
 */

static int run_for(struct vm *v, double seconds, struct task_stat *before,
		   struct task_stat *after, double *wall, unsigned long *runs)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { 0 };
	double t0;

	sigaction(SIGALRM, &sa, NULL);
	it.it_value.tv_sec = (long)seconds;
	it.it_value.tv_usec = (long)((seconds - (long)seconds) * 1e6);
	if (read_task_stat(&before->utime, &before->stime, &before->gtime,
			   &before->ghalted))
		die("read /proc/self/task/<tid>/stat");
	/*
	 * The timer repeats after it expired, so that an alarm that lands
	 * between the check of alarmed and KVM_RUN is not the last.
	 */
	it.it_interval.tv_usec = 50000;
	alarmed = 0;
	t0 = now();
	*runs = 0;
	setitimer(ITIMER_REAL, &it, NULL);
	while (!alarmed) {
		int r = ioctl(v->vcpu, KVM_RUN, 0);

		++*runs;
		if (r && errno != EINTR)
			die("KVM_RUN");
		/* Another signal (SIGSTOP and SIGCONT, say) only pauses the run. */
		if (r || v->run->exit_reason == KVM_EXIT_INTR)
			continue;
		fprintf(stderr, "gh-vmm: unexpected exit reason %u (the guest should not exit)\n",
			v->run->exit_reason);
		return 1;
	}
	*wall = now() - t0;
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	if (read_task_stat(&after->utime, &after->stime, &after->gtime,
			   &after->ghalted))
		die("read /proc/self/task/<tid>/stat");
	return 0;
}

static int cmd_halt(double seconds)
{
	struct task_stat b, a;
	long hz = sysconf(_SC_CLK_TCK);
	unsigned long runs;
	double wall;
	struct vm v;

	vm_create(&v, halt_code, sizeof(halt_code),
		  KVM_X86_DISABLE_EXITS_HLT | KVM_X86_DISABLE_EXITS_PAUSE);
	if (run_for(&v, seconds, &b, &a, &wall, &runs))
		return 1;

	printf("tid=%ld\n", (long)syscall(SYS_gettid));
	printf("stat_guest_halted_ns=%lld\n", read_vcpu_stat(&v, "guest_halted_ns"));
	printf("clk_tck=%ld\n", hz);
	printf("tsc_khz=%d\n", ioctl(v.vcpu, KVM_GET_TSC_KHZ, 0));
	printf("wall_s=%.3f\n", wall);
	printf("kvm_run_calls=%lu\n", runs);
	printf("utime_ticks=%lu\n", a.utime - b.utime);
	printf("stime_ticks=%lu\n", a.stime - b.stime);
	printf("gtime_ticks=%lu\n", a.gtime - b.gtime);
	printf("gtime_s=%.3f\n", (double)(a.gtime - b.gtime) / hz);
	if (a.ghalted >= 0)
		printf("gtime_halted_ticks=%ld\n", a.ghalted - b.ghalted);
	else
		printf("gtime_halted_ticks=absent\n");
	printf("busy_as_seen_by_host=%.1f%%\n",
	       100.0 * (a.utime - b.utime + a.stime - b.stime) / hz / wall);
	return 0;
}

/*
 * The spoofer's memory: a page directory and a page table that map the
 * first 64 KiB one to one, a page that ends in the forged instruction,
 * and the loop at the start of the next page, so that every interrupt
 * that finds the guest in its loop finds the forged bytes before RIP.
 */
#define SPOOF_PD	0x1000
#define SPOOF_PT	0x2000
#define SPOOF_BAIT	0x4000
#define SPOOF_LOOP	0x5000
#define PTE_P		0x01
#define PTE_RW		0x02
#define PTE_A		0x20

static void spoof_sregs(struct vm *v)
{
	struct kvm_segment seg = {
		.base = 0, .limit = 0xffffffff, .present = 1, .s = 1, .db = 1,
		.g = 1,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(v->vcpu, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS");
	seg.type = 0xb;			/* code, execute/read, accessed */
	seg.selector = 0x8;
	sregs.cs = seg;
	seg.type = 0x3;			/* data, read/write, accessed */
	seg.selector = 0x10;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
	sregs.cr3 = SPOOF_PD;
	sregs.cr4 = 0;			/* two-level paging, 4 KiB pages */
	sregs.efer = 0;
	sregs.cr0 = 0x80000011;		/* PG, ET, PE */
	if (ioctl(v->vcpu, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = SPOOF_LOOP;
	regs.rflags = 0x2;		/* IF clear: only the host interrupts */
	if (ioctl(v->vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
}

static int cmd_spoof(double seconds, const char *insn, const char *bait)
{
	static const uint8_t hlt[] = { 0xf4 }, mwait[] = { 0x0f, 0x01, 0xc9 };
	static const uint8_t loop[] = { 0xeb, 0xfe };	/* 1: jmp 1b */
	uint64_t disable_exits = KVM_X86_DISABLE_EXITS_HLT;
	long hz = sysconf(_SC_CLK_TCK);
	const uint8_t *code = hlt;
	size_t len = sizeof(hlt);
	uint32_t *pt, *bait_pte;
	struct task_stat b, a;
	unsigned char resident;
	unsigned long runs;
	double wall;
	struct vm v;
	int i;

	if (!strcmp(insn, "mwait")) {
		disable_exits = KVM_X86_DISABLE_EXITS_MWAIT;
		code = mwait;
		len = sizeof(mwait);
	} else if (strcmp(insn, "hlt")) {
		fprintf(stderr, "gh-vmm: spoof: instruction is hlt or mwait\n");
		return 2;
	}
	if (strcmp(bait, "accessed") && strcmp(bait, "unaccessed") &&
	    strcmp(bait, "evicted")) {
		fprintf(stderr, "gh-vmm: spoof: bait page is accessed, unaccessed or evicted\n");
		return 2;
	}

	vm_create(&v, NULL, 0, disable_exits);
	*(uint32_t *)(v.mem + SPOOF_PD) = SPOOF_PT | PTE_A | PTE_RW | PTE_P;
	pt = (uint32_t *)(v.mem + SPOOF_PT);
	for (i = 0; i < GUEST_MEM_SIZE >> 12; i++)
		pt[i] = i << 12 | PTE_A | PTE_RW | PTE_P;
	bait_pte = &pt[SPOOF_BAIT >> 12];
	if (!strcmp(bait, "unaccessed"))
		*bait_pte &= ~PTE_A;
	memset(v.mem + SPOOF_BAIT, 0x90, 0x1000);	/* NOPs */
	memcpy(v.mem + SPOOF_LOOP - len, code, len);
	memcpy(v.mem + SPOOF_LOOP, loop, sizeof(loop));
	spoof_sregs(&v);
	/* A fresh mapping in its place: the page is gone until faulted in. */
	if (!strcmp(bait, "evicted") &&
	    mmap(v.mem + SPOOF_BAIT, 0x1000, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		die("mmap(MAP_FIXED) over the bait page");

	if (run_for(&v, seconds, &b, &a, &wall, &runs))
		return 1;
	if (mincore(v.mem + SPOOF_BAIT, 0x1000, &resident))
		die("mincore");

	printf("tid=%ld\n", (long)syscall(SYS_gettid));
	printf("wall_s=%.3f\n", wall);
	printf("clk_tck=%ld\n", hz);
	printf("gtime_ticks=%lu\n", a.gtime - b.gtime);
	printf("gtime_halted_ticks=%ld\n",
	       a.ghalted >= 0 ? a.ghalted - b.ghalted : -1);
	printf("stat_guest_halted_ns=%lld\n", read_vcpu_stat(&v, "guest_halted_ns"));
	printf("stat_guest_halted_estimate_ns=%lld\n",
	       read_vcpu_stat(&v, "guest_halted_estimate_ns"));
	printf("bait_pte_accessed=%d\n", !!(*bait_pte & PTE_A));
	printf("bait_resident=%d\n", resident & 1);
	return 0;
}

/*
 * The guest of "iothread" and "duty", in real mode with the IVT at 0:
 * "sti; 1: hlt; jmp 1b" at KICK_CODE, and at KICK_HANDLER the handler of
 * the interrupt the VMM gives at each kick of its timer, which spins for
 * the number of TSC cycles at KICK_BUDGET (0: none), writes to IO_PORT and
 * returns:
 *
 *	rdtsc; mov ebx, eax
 *   1:	rdtsc; sub eax, ebx; cmp eax, [KICK_BUDGET]; jb 1b
 *	out IO_PORT, al; iret
 */
#define KICK_VECTOR	0x20
#define KICK_CODE	0x1000
#define KICK_HANDLER	0x1100
#define KICK_BUDGET	0x1200
#define KICK_STACK	0x8000

static const uint8_t kick_code[] = { 0xfb, 0xf4, 0xeb, 0xfd };
static const uint8_t kick_handler[] = {
	0x0f, 0x31, 0x66, 0x89, 0xc3,
	0x0f, 0x31, 0x66, 0x29, 0xd8,
	0x66, 0x3b, 0x06, KICK_BUDGET & 0xff, KICK_BUDGET >> 8, 0x72, 0xf4,
	0xe6, IO_PORT, 0xcf
};

/*
 * Create that guest, HLT passed through, spinning @busy_us per interrupt,
 * with IO_PORT turned into signals of a new eventfd (KVM_IOEVENTFD), as a
 * VMM's ioeventfd does, so that the guest's write does not return to user
 * space.  Returns the eventfd.
 */
static int kick_vm_create(struct vm *v, uint32_t busy_us)
{
	struct kvm_ioeventfd ioev = { .addr = IO_PORT, .len = 1,
				      .flags = KVM_IOEVENTFD_FLAG_PIO };
	uint16_t ivt[2] = { KICK_HANDLER, 0 };
	struct kvm_regs regs;
	uint32_t budget;
	int khz;

	vm_create(v, NULL, 0,
		  KVM_X86_DISABLE_EXITS_HLT | KVM_X86_DISABLE_EXITS_PAUSE);
	khz = ioctl(v->vcpu, KVM_GET_TSC_KHZ, 0);
	if (khz <= 0)
		die("KVM_GET_TSC_KHZ");
	budget = (uint64_t)busy_us * khz / 1000;
	memcpy(v->mem + KICK_VECTOR * 4, ivt, sizeof(ivt));
	memcpy(v->mem + KICK_CODE, kick_code, sizeof(kick_code));
	memcpy(v->mem + KICK_HANDLER, kick_handler, sizeof(kick_handler));
	memcpy(v->mem + KICK_BUDGET, &budget, sizeof(budget));
	if (ioctl(v->vcpu, KVM_GET_REGS, &regs))
		die("KVM_GET_REGS");
	regs.rip = KICK_CODE;
	regs.rsp = KICK_STACK;
	if (ioctl(v->vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");

	ioev.fd = eventfd(0, EFD_CLOEXEC);
	if (ioev.fd < 0)
		die("eventfd");
	if (ioctl(v->vm, KVM_IOEVENTFD, &ioev))
		die("KVM_IOEVENTFD");
	return ioev.fd;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void on_kick(int sig)
{
	(void)sig;
}

/*
 * Run the kicked guest on this thread until @end_ns: a timer signals this
 * thread every @period_us, KVM_RUN returns, and the VMM gives the guest an
 * interrupt as soon as it can take one.  If @injected_ns is given, it is
 * set to the time of an interrupt given while it was 0.  Returns 0, or 1
 * after an unexpected exit.
 */
static int kick_run(struct vm *v, long period_us, uint64_t end_ns,
		    _Atomic uint64_t *injected_ns)
{
	struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID,
				.sigev_signo = SIGUSR1 };
	struct sigaction sa = { .sa_handler = on_kick };
	struct itimerspec its = { 0 };
	timer_t timer;
	int want = 0;

	sigaction(SIGUSR1, &sa, NULL);
	sev._sigev_un._tid = syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer))
		die("timer_create");
	its.it_value.tv_nsec = period_us % 1000000 * 1000;
	its.it_value.tv_sec = period_us / 1000000;
	its.it_interval = its.it_value;
	if (timer_settime(timer, 0, &its, NULL))
		die("timer_settime");

	while (now_ns() < end_ns) {
		struct kvm_interrupt irq = { .irq = KICK_VECTOR };
		uint64_t zero = 0;
		int r = ioctl(v->vcpu, KVM_RUN, 0);

		if (r && errno != EINTR)
			die("KVM_RUN");
		if (r || v->run->exit_reason == KVM_EXIT_INTR) {
			want = 1;		/* the timer's kick */
		} else if (v->run->exit_reason != KVM_EXIT_IRQ_WINDOW_OPEN) {
			fprintf(stderr, "gh-vmm: unexpected exit reason %u\n",
				v->run->exit_reason);
			timer_delete(timer);
			return 1;
		}
		if (!want)
			continue;
		if (!v->run->ready_for_interrupt_injection) {
			v->run->request_interrupt_window = 1;
			continue;
		}
		v->run->request_interrupt_window = 0;
		want = 0;
		/* A wake-up not yet taken keeps the time of its interrupt. */
		if (injected_ns)
			atomic_compare_exchange_strong(injected_ns, &zero, now_ns());
		if (ioctl(v->vcpu, KVM_INTERRUPT, &irq))
			die("KVM_INTERRUPT");
	}
	timer_delete(timer);
	return 0;
}

static void pin_self(int cpu, int idle)
{
	cpu_set_t set;

	if (cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			die("sched_setaffinity");
	}
	if (idle) {
		struct sched_param sp = { 0 };

		if (sched_setscheduler(0, SCHED_IDLE, &sp))
			die("sched_setscheduler(SCHED_IDLE)");
	}
}

#define IOT_MAX_WAKES	(1 << 20)
#define IOT_MAX_CPUS	256
#define IOT_SPIN_NS	20000
#define IOT_WARMUP_NS	1000000000ULL

struct iothread {
	int efd;
	int vcpu_cpu;
	uint64_t start_ns;		/* wake-ups before it are not counted */
	_Atomic uint64_t injected_ns;	/* when the pending interrupt was given */
	_Atomic int done;
	uint64_t *lat_ns;
	unsigned long wakes, beside, lost;
	unsigned long on_cpu[IOT_MAX_CPUS];
};

/* Take each eventfd signal, time it, and do a little work, as a device would. */
static void *iothread_fn(void *arg)
{
	struct iothread *io = arg;
	cpu_set_t all;
	uint64_t cnt;
	int i;

	/* Created on its vCPU's CPU, free to run on any from its first wake-up. */
	CPU_ZERO(&all);
	for (i = 0; i < sysconf(_SC_NPROCESSORS_CONF) && i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	if (sched_setaffinity(0, sizeof(all), &all))
		die("sched_setaffinity");
	while (!atomic_load(&io->done)) {
		uint64_t t, inj;
		int cpu;

		if (read(io->efd, &cnt, sizeof(cnt)) != sizeof(cnt)) {
			if (errno == EINTR)
				continue;
			die("read eventfd");
		}
		t = now_ns();
		cpu = sched_getcpu();
		inj = atomic_exchange(&io->injected_ns, 0);
		if (atomic_load(&io->done))
			break;
		if (t < io->start_ns)
			continue;
		if (!inj || inj > t) {
			io->lost++;
			continue;
		}
		if (io->wakes < IOT_MAX_WAKES)
			io->lat_ns[io->wakes] = t - inj;
		io->wakes++;
		if (cpu >= 0 && cpu < IOT_MAX_CPUS)
			io->on_cpu[cpu]++;
		io->beside += cpu == io->vcpu_cpu;
		while (now_ns() - t < IOT_SPIN_NS)
			;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmd_iothread(double seconds, long period_us, int cpu, int idle)
{
	static struct iothread io;
	uint64_t n, i;
	pthread_t thr;
	struct vm v;

	if (seconds <= 0 || period_us < 100 || cpu < 0 || cpu >= CPU_SETSIZE) {
		fprintf(stderr, "gh-vmm: iothread: SECONDS > 0, PERIOD_US >= 100, CPU >= 0\n");
		return 2;
	}
	io.lat_ns = calloc(IOT_MAX_WAKES, sizeof(*io.lat_ns));
	if (!io.lat_ns)
		die("calloc");
	io.vcpu_cpu = cpu;
	io.efd = kick_vm_create(&v, 0);

	/*
	 * The I/O thread starts on the vCPU's CPU, as a VMM's threads can,
	 * and is then free: where its wake-ups take it is what is measured.
	 */
	pin_self(cpu, 0);
	io.start_ns = now_ns() + IOT_WARMUP_NS;
	if (pthread_create(&thr, NULL, iothread_fn, &io))
		die("pthread_create");
	pin_self(-1, idle);
	if (kick_run(&v, period_us, io.start_ns + (uint64_t)(seconds * 1e9),
		     &io.injected_ns))
		return 1;
	atomic_store(&io.done, 1);
	n = 1;
	if (write(io.efd, &n, sizeof(n)) != sizeof(n))
		die("write eventfd");
	pthread_join(thr, NULL);

	n = io.wakes < IOT_MAX_WAKES ? io.wakes : IOT_MAX_WAKES;
	if (!n) {
		fprintf(stderr, "gh-vmm: iothread: the I/O thread never woke\n");
		return 1;
	}
	qsort(io.lat_ns, n, sizeof(*io.lat_ns), cmp_u64);
	printf("wakes=%lu\n", io.wakes);
	printf("lost=%lu\n", io.lost);
	printf("p50_us=%.1f\n", io.lat_ns[n / 2] / 1e3);
	printf("p99_us=%.1f\n", io.lat_ns[n * 99 / 100] / 1e3);
	printf("max_us=%.1f\n", io.lat_ns[n - 1] / 1e3);
	printf("beside=%.4f\n", (double)io.beside / io.wakes);
	printf("on_cpu=");
	for (i = 0; i < (uint64_t)sysconf(_SC_NPROCESSORS_CONF) && i < IOT_MAX_CPUS; i++)
		printf("%s%.4f", i ? "," : "", (double)io.on_cpu[i] / io.wakes);
	printf("\n");
	printf("stat_guest_halted_ns=%lld\n", read_vcpu_stat(&v, "guest_halted_ns"));
	return 0;
}

#define DUTY_MAX_VCPUS	16

/* One vCPU of "duty": its thread, and what it measured. */
struct duty_vcpu {
	struct vm v;
	int cpu;
	long period_us;
	uint64_t end_ns;
	int rc;
	double wait, halted;
	unsigned long moves;
};

/*
 * This thread's run-queue wait so far (the second field of its schedstat),
 * in ns, and its migrations (se.nr_migrations of its sched file, absent
 * without CONFIG_SCHED_DEBUG: 0).
 */
static void read_sched(uint64_t *wait_ns, unsigned long *moves)
{
	char path[80], buf[4096], *p;
	unsigned long long run, wait;
	int fd, n;
	long tid = syscall(SYS_gettid);

	snprintf(path, sizeof(path), "/proc/self/task/%ld/schedstat", tid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open schedstat");
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	if (sscanf(buf, "%llu %llu", &run, &wait) != 2)
		die("parse schedstat");
	*wait_ns = wait;
	*moves = 0;
	snprintf(path, sizeof(path), "/proc/self/task/%ld/sched", tid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	p = strstr(buf, "se.nr_migrations");
	if (p && (p = strchr(p, ':')))
		*moves = strtoul(p + 1, NULL, 10);
}

static void *duty_vcpu_fn(void *arg)
{
	struct duty_vcpu *d = arg;
	unsigned long m0, m1;
	uint64_t w0, w1, t0;
	long long h0, h1;

	pin_self(d->cpu, 0);
	read_sched(&w0, &m0);
	h0 = read_vcpu_stat(&d->v, "guest_halted_ns");
	t0 = now_ns();
	d->rc = kick_run(&d->v, d->period_us, d->end_ns, NULL);
	read_sched(&w1, &m1);
	h1 = read_vcpu_stat(&d->v, "guest_halted_ns");
	d->wait = (double)(w1 - w0) / (now_ns() - t0);
	d->halted = h0 >= 0 ? (double)(h1 - h0) / (now_ns() - t0) : -1;
	d->moves = m1 - m0;
	return NULL;
}

/*
 * A guest of NVCPUS vCPUs, each busy BUSY_PERCENT of each period and
 * halted the rest, on its own thread: unpinned, or vCPU i on CPU + i.
 */
static int cmd_duty(double seconds, long period_us, long busy_pct, int nr,
		    int cpu)
{
	static struct duty_vcpu d[DUTY_MAX_VCPUS];
	pthread_t thr[DUTY_MAX_VCPUS];
	uint64_t end;
	int i, rc = 0;

	if (seconds <= 0 || period_us < 100 || busy_pct < 0 || busy_pct > 99 ||
	    nr < 1 || nr > DUTY_MAX_VCPUS || cpu >= CPU_SETSIZE - nr) {
		fprintf(stderr, "gh-vmm: duty: SECONDS > 0, PERIOD_US >= 100, 0 <= BUSY_PERCENT < 100, 1 <= NVCPUS <= %d\n",
			DUTY_MAX_VCPUS);
		return 2;
	}
	kick_vm_create(&d[0].v, period_us * busy_pct / 100);
	for (i = 1; i < nr; i++) {
		struct kvm_sregs sregs;
		struct kvm_regs regs;

		d[i].v = d[0].v;
		d[i].v.vcpu = ioctl(d[0].v.vm, KVM_CREATE_VCPU, i);
		if (d[i].v.vcpu < 0)
			die("KVM_CREATE_VCPU");
		d[i].v.run = mmap(NULL, ioctl(d[0].v.kvm, KVM_GET_VCPU_MMAP_SIZE, 0),
				  PROT_READ | PROT_WRITE, MAP_SHARED, d[i].v.vcpu, 0);
		if (d[i].v.run == MAP_FAILED)
			die("mmap kvm_run");
		if (ioctl(d[0].v.vcpu, KVM_GET_SREGS, &sregs) ||
		    ioctl(d[i].v.vcpu, KVM_SET_SREGS, &sregs))
			die("KVM_SET_SREGS");
		if (ioctl(d[0].v.vcpu, KVM_GET_REGS, &regs))
			die("KVM_GET_REGS");
		/* Each vCPU's interrupts on a stack of its own. */
		regs.rsp -= i * 0x100;
		if (ioctl(d[i].v.vcpu, KVM_SET_REGS, &regs))
			die("KVM_SET_REGS");
	}
	end = now_ns() + (uint64_t)(seconds * 1e9);
	for (i = 0; i < nr; i++) {
		d[i].cpu = cpu < 0 ? -1 : cpu + i;
		d[i].period_us = period_us;
		d[i].end_ns = end;
		if (pthread_create(&thr[i], NULL, duty_vcpu_fn, &d[i]))
			die("pthread_create");
	}
	for (i = 0; i < nr; i++) {
		pthread_join(thr[i], NULL);
		rc |= d[i].rc;
	}
	printf("wait=");
	for (i = 0; i < nr; i++)
		printf("%s%.4f", i ? "," : "", d[i].wait);
	printf("\nhalted=");
	for (i = 0; i < nr; i++)
		printf("%s%.4f", i ? "," : "", d[i].halted);
	printf("\nmoves=");
	for (i = 0; i < nr; i++)
		printf("%s%lu", i ? "," : "", d[i].moves);
	printf("\n");
	return rc;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "exits"))
		return cmd_exits(strtoul(argv[2], NULL, 0),
				 argc == 4 && !strcmp(argv[3], "passthrough"));
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "kexits"))
		return cmd_kexits(strtoul(argv[2], NULL, 0),
				  argc == 4 && !strcmp(argv[3], "passthrough"));
	if (argc == 3 && !strcmp(argv[1], "halt"))
		return cmd_halt(strtod(argv[2], NULL));
	if ((argc == 5 || (argc == 6 && !strcmp(argv[5], "idle"))) &&
	    !strcmp(argv[1], "iothread"))
		return cmd_iothread(strtod(argv[2], NULL), strtol(argv[3], NULL, 0),
				    atoi(argv[4]), argc == 6);
	if (argc >= 5 && argc <= 7 && !strcmp(argv[1], "duty"))
		return cmd_duty(strtod(argv[2], NULL), strtol(argv[3], NULL, 0),
				strtol(argv[4], NULL, 0),
				argc >= 6 ? atoi(argv[5]) : 1,
				argc == 7 ? atoi(argv[6]) : -1);
	if (argc == 5 && !strcmp(argv[1], "spoof"))
		return cmd_spoof(strtod(argv[2], NULL), argv[3], argv[4]);
	fprintf(stderr, "usage: gh-vmm exits|kexits N [passthrough] | gh-vmm halt SECONDS\n"
		"       gh-vmm spoof SECONDS hlt|mwait accessed|unaccessed|evicted\n"
		"       gh-vmm iothread SECONDS PERIOD_US CPU [idle]\n"
		"       gh-vmm duty SECONDS PERIOD_US BUSY_PERCENT [NVCPUS [CPU]]\n");
	return 2;
}
