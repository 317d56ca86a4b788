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
 *
 * Results are printed as "key=value" lines so tests can parse them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
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
	if (argc == 5 && !strcmp(argv[1], "spoof"))
		return cmd_spoof(strtod(argv[2], NULL), argv[3], argv[4]);
	fprintf(stderr, "usage: gh-vmm exits|kexits N [passthrough] | gh-vmm halt SECONDS\n"
		"       gh-vmm spoof SECONDS hlt|mwait accessed|unaccessed|evicted\n");
	return 2;
}
