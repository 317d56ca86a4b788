// SPDX-License-Identifier: GPL-2.0-only
/*
 * Host load balancing around halting vCPUs: the seed experiment in
 * miniature.
 *
 * One VM, HLT passed through, four vCPUs, each on its own host thread
 * pinned to host CPU 0-3.  vCPUs 0 and 1 are busy: they run a noise meter,
 * a loop reading the TSC that sums the gaps between two reads longer than a
 * threshold (ten times the median gap of a calibration loop, or -T ns), the
 * time the vCPU did not run.  vCPUs 2 and 3 halt in "sti; hlt", their APIC
 * timer waking them at most once a second: their host threads run all the
 * time, in guest mode, but the guest does nothing.  With -b, vCPU 3 halts
 * for the first half of the run only and then spins as the meters do (the
 * turned-busy vCPU).
 *
 * Once the vCPUs run, -s (2 by default) busy-loop processes start on the
 * host, free to run on any CPU.  A scheduler that sees a halting vCPU's CPU
 * as busy as a busy vCPU's spreads them over all four CPUs, and each takes
 * half of a busy vCPU's CPU time whenever it lands there.  One that sees the
 * CPU of a mostly halted vCPU as nearly idle (kernel.sched_guest_halted,
 * with KVM's halted-time accounting, kvm.guest_halted, on) should move them
 * to the halting vCPUs' CPUs and keep them there.  With -i the halting
 * vCPUs' threads are SCHED_IDLE instead: the reference of how well the
 * scheduler can do.  With -g DIR the stressors run in that cgroup (v2),
 * as a host's daemons run in another slice than its VMs (start the test
 * itself in the VM's cgroup).  With -W the halting vCPUs arm their timer
 * every period instead, and count in the guest how late each interrupt
 * reached them: the price of sharing their CPUs.
 *
 * The vCPUs and the stressors start together, and the measured run begins
 * after a warm-up (-w, 2 s by default), as the seed experiment's rtla ran
 * with --warm-up 60: the host learns a vCPU's halted share from its guest
 * time, which a halting vCPU beside a stressor of a heavier group gets
 * little of.  The warm-up runs as the run does, but counts nothing.
 *
 * The host measures, over the run, each vCPU thread's run-queue wait as a
 * share of wall time (the run delay, the second field of
 * /proc/self/task/<tid>/schedstat, which grows by a whole wait when the
 * wait ends), and the stressors' residency on each CPU: the share of the
 * run each spent on its runqueue, averaged over stressors.  Each stressor
 * keeps that account itself, adding the time from one turn of its loop to
 * the next to the CPU it is on (sched_getcpu(), what field 39 of its
 * /proc/<pid>/stat says) in memory shared with the test, and counts its
 * moves.  Sampling its CPU from the test instead would be host load of its
 * own: a thread that wakes every 10 ms takes 6% of a CPU under QEMU TCG,
 * and the busy vCPUs' waits would count it.  So the test's main thread
 * sleeps through a run; its share of a CPU is printed as sampler_load.
 *
 * With -b the host gives the turned-busy vCPU's wait in the second half
 * (from the time it turned busy, or from the middle of the run if it could
 * not run enough to turn busy in it: busy_turned=0), as a whole and in
 * 100 ms bins, and with -R FRACTION how long after it turned busy its wait
 * came back within 10% of that reference level (at most 1.1 times it) over
 * the next 300 ms and the rest of the run (busy_recovery_ms), and, for
 * comparison, when a trailing 300 ms window first came that low
 * (busy_recovery_trailing_ms, which lags by up to the window).  These
 * waits are the share of the time its thread was not on the CPU (the first field of its schedstat): a vCPU
 * thread does not sleep while its guest runs, halted or not, and the run
 * delay shows a wait only once it ended, where a starved vCPU's never
 * does.  They need its schedstat every 10 ms, so with -b the main thread
 * wakes that often.  The meters report their availability, the share of
 * their run not lost to gaps.
 *
 * The results are key=value lines on stdout, for scripts/lb-bench.py; the
 * test does not judge them, and only reads the two switches.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>

#include "apic.h"
#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"

#define NR_VCPUS		4
#define NR_METERS		2
#define BUSY_VCPU		3
#define TIMER_VECTOR		0xec
#define MAX_STRESSORS		64
#define CAL_GAPS		1024

#define SAMPLE_NS		10000000ULL
#define BIN_NS			100000000ULL
#define TRAIL_NS		300000000ULL
/* The longest one-shot APIC timer a halting vCPU arms, in ns. */
#define MAX_TIMER_NS		1000000000ULL

#define SWITCH_SYSCTL		"/proc/sys/kernel/sched_guest_halted"
#define PARAM_DIR		"/sys/module/kvm/parameters/"

enum { ROLE_METER, ROLE_HALT, ROLE_HALT_BUSY };
enum { STAGE_READY, STAGE_BUSY, STAGE_DONE };

/* Guest side. */

static uint64_t timer_irqs[NR_VCPUS];

/* The warm-up before the measured run (-w), in ns. */
static uint64_t warm_ns = 2000000000ULL;
static uint32_t cal_gap[NR_VCPUS][CAL_GAPS];

/*
 * With -W: the halting vCPUs' timer period in ns, and how late each timer
 * interrupt reached the guest, in half-octave buckets of microseconds
 * (late_bucket()), counted by the guest itself.
 */
#define LATE_BUCKETS		64
static uint64_t wake_period_ns;
static uint64_t late_tsc_khz;
static uint64_t deadline[NR_VCPUS];
static uint32_t late_hist[NR_VCPUS][LATE_BUCKETS];

/* 0 for under 1 us; then two buckets per power of two. */
static int late_bucket(uint64_t us)
{
	int msb = 63 - __builtin_clzll(us | 1);

	if (!us)
		return 0;
	return min_t(int, LATE_BUCKETS - 1,
		     1 + 2 * msb + (msb ? (us >> (msb - 1)) & 1 : 0));
}

/* The upper bound in microseconds of bucket @b (late_bucket()). */
static uint64_t late_bucket_top(int b)
{
	int msb = (b - 1) / 2;

	if (!b)
		return 1;
	return ((b - 1) % 2 || !msb) ? 2ULL << msb : 3ULL << (msb - 1);
}

static void guest_timer_handler(struct ex_regs *regs)
{
	uint32_t id = GET_APIC_ID_FIELD(xapic_read_reg(APIC_ID));
	uint64_t now = rdtsc(), d;

	if (id < NR_VCPUS) {
		WRITE_ONCE(timer_irqs[id], timer_irqs[id] + 1);
		d = deadline[id];
		if (d && late_tsc_khz) {
			late_hist[id][late_bucket(now > d ? (now - d) * 1000 /
						     late_tsc_khz : 0)]++;
			deadline[id] = 0;
		}
	}
	xapic_write_reg(APIC_EOI, 0);
}

/* The least value that more than half of @n values do not exceed. */
static uint64_t guest_median(const uint32_t *v, int n)
{
	uint64_t lo = 0, hi = UINT32_MAX, mid;
	int i, below;

	while (lo < hi) {
		mid = (lo + hi) / 2;
		for (i = 0, below = 0; i < n; i++)
			below += v[i] <= mid;
		if (below > n / 2)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Ten times the median gap between two TSC reads, in cycles. */
static uint64_t guest_threshold(uint32_t idx)
{
	uint32_t *gap = cal_gap[idx];
	uint64_t prev = rdtsc(), now;
	int i;

	for (i = 0; i < CAL_GAPS; i++) {
		now = rdtsc();
		gap[i] = min_t(uint64_t, now - prev, UINT32_MAX);
		prev = now;
	}
	return 10 * guest_median(gap, CAL_GAPS);
}

/*
 * The noise meter: spin from @start until @end, summing the gaps between
 * two TSC reads longer than @thr.  Returns the noise; *@total is the time
 * spun, both in cycles.
 */
static uint64_t guest_meter(uint64_t start, uint64_t end, uint64_t thr,
			    uint64_t *total)
{
	uint64_t prev = start, now, noise = 0;

	while ((now = rdtsc()) < end) {
		if (now - prev > thr)
			noise += now - prev;
		prev = now;
	}
	*total = now - start;
	return noise;
}

/*
 * Halt until the TSC reaches @end.  A one-shot APIC timer, armed for the
 * time left but at most MAX_TIMER_NS, wakes the vCPU; a host interrupt
 * that ends a HLT early (as on SVM) only makes it halt again.
 */
static void guest_halt_until(uint32_t idx, uint64_t tsc_khz, uint64_t end)
{
	uint64_t now, left_ns, irqs = 0;
	bool armed = false;

	while ((now = rdtsc()) < end) {
		if (!armed) {
			left_ns = (end - now) * 1000 / tsc_khz * 1000;
			left_ns = min_t(uint64_t, left_ns, wake_period_ns ?: MAX_TIMER_NS);
			irqs = READ_ONCE(timer_irqs[idx]);
			/* Only whole periods count towards the lateness. */
			if (wake_period_ns && left_ns == wake_period_ns)
				deadline[idx] = now + left_ns * tsc_khz / 1000000;
			xapic_write_reg(APIC_TMICT, left_ns + 1);
			armed = true;
		}
		asm volatile("sti; hlt; cli" ::: "memory");
		if (READ_ONCE(timer_irqs[idx]) != irqs)
			armed = false;
	}
	xapic_write_reg(APIC_TMICT, 0);
	deadline[idx] = 0;
}

static void guest_code(uint32_t idx, uint32_t role, uint64_t tsc_khz,
		       uint64_t run_ns, uint64_t switch_ns, uint64_t thr_ns)
{
	uint64_t run = run_ns / 1000 * tsc_khz / 1000;
	uint64_t thr, start, t, noise = 0, total = 0;
	int i;

	asm volatile("cli");
	late_tsc_khz = tsc_khz;
	if (thr_ns)
		thr = thr_ns * tsc_khz / 1000000;
	else if (role == ROLE_HALT)
		thr = 0;
	else
		thr = guest_threshold(idx);
	if (role != ROLE_METER) {
		xapic_enable();
		xapic_write_reg(APIC_TDCR, 0xb);	/* divide by 1 */
		xapic_write_reg(APIC_LVTT, APIC_LVT_TIMER_ONESHOT | TIMER_VECTOR);
	}

	GUEST_SYNC_ARGS(STAGE_READY, thr, 0, 0, 0);
	start = rdtsc();
	/* The warm-up: the same as the run, but not counted. */
	if (warm_ns) {
		t = start + warm_ns / 1000 * tsc_khz / 1000;
		if (role == ROLE_METER)
			guest_meter(start, t, thr, &total);
		else
			guest_halt_until(idx, tsc_khz, t);
		for (i = 0; i < LATE_BUCKETS; i++)
			WRITE_ONCE(late_hist[idx][i], 0);
		start = t;
	}
	switch (role) {
	case ROLE_METER:
		noise = guest_meter(start, start + run, thr, &total);
		break;
	case ROLE_HALT:
		guest_halt_until(idx, tsc_khz, start + run);
		break;
	case ROLE_HALT_BUSY:
		guest_halt_until(idx, tsc_khz,
				 start + switch_ns / 1000 * tsc_khz / 1000);
		GUEST_SYNC_ARGS(STAGE_BUSY, 0, 0, 0, 0);
		t = rdtsc();
		noise = guest_meter(t, start + run, thr, &total);
		break;
	}
	GUEST_SYNC_ARGS(STAGE_DONE, noise, total, 0, 0);
	GUEST_DONE();
}

/* Host side. */

struct vcpu_thread {
	struct kvm_vcpu *vcpu;
	pthread_t thread;
	int idx;
	pid_t tid;
	int schedstat_fd;
	uint64_t thr;		/* meter threshold, cycles */
	uint64_t noise;		/* cycles */
	uint64_t total;		/* cycles */
	uint64_t switch_ns;	/* CLOCK_MONOTONIC when it turned busy */
};

/* A vCPU thread's schedstat: time on the CPU, and run delay, in ns. */
enum { EXEC, DELAY, NR_STATS };

struct sample {
	uint64_t t;
	uint64_t stat[NR_STATS][NR_VCPUS];
};

/* The stressors' time on each CPU and their moves, summed, at @t. */
struct residency_snap {
	uint64_t t;
	uint64_t moves;
	uint64_t ns[CPU_SETSIZE];
};

static struct vcpu_thread vcpus[NR_VCPUS];
static pthread_barrier_t ready_barrier, done_barrier;
static sem_t first_done;
static int nr_done;
static bool idle_halters;

/*
 * A stressor's own account, in memory shared with the test: the time it
 * spent on each CPU's runqueue, in ns, and how often it moved.
 */
struct stressor_slot {
	uint64_t moves;
	uint64_t ns[CPU_SETSIZE];
} __aligned(64);

static struct stressor_slot *slots;
static pid_t stressors[MAX_STRESSORS];
static int nr_stressors = 2;
static bool turn_busy;
/* With -g: the cgroup (v2) directory the stressors run in. */
static const char *stressor_cgroup;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/*
 * The rate of the TSC the guest reads, in kHz of CLOCK_MONOTONIC, over
 * 200 ms: the guest times its run by the TSC.  KVM_GET_TSC_KHZ gives the
 * rate the host kernel calibrated at boot, which under emulation (QEMU TCG)
 * has been seen off by half, with the clocksource no longer the TSC.
 */
static uint64_t measure_tsc_khz(void)
{
	uint64_t t0 = now_ns(), c0 = rdtsc(), t1, c1;

	usleep(200000);
	c1 = rdtsc();
	t1 = now_ns();
	return (c1 - c0) * 1000000 / (t1 - t0);
}

/* This thread's CPU time, in ns. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void *vcpu_thread_main(void *arg)
{
	struct vcpu_thread *v = arg;
	struct sched_param sp = { 0 };
	struct ucall uc;
	cpu_set_t set;
	int r;

	CPU_ZERO(&set);
	CPU_SET(v->idx, &set);
	r = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	TEST_ASSERT(!r, "pin vCPU %d's thread to CPU %d: %s", v->idx, v->idx,
		    strerror(r));
	if (idle_halters && v->idx >= NR_METERS)
		TEST_ASSERT(!sched_setscheduler(0, SCHED_IDLE, &sp),
			    "make vCPU %d's thread SCHED_IDLE", v->idx);
	WRITE_ONCE(v->tid, syscall(SYS_gettid));

	for (;;) {
		vcpu_run(v->vcpu);
		TEST_ASSERT_KVM_EXIT_REASON(v->vcpu, KVM_EXIT_IO);
		switch (get_ucall(v->vcpu, &uc)) {
		case UCALL_SYNC:
			if (uc.args[1] == STAGE_READY) {
				v->thr = uc.args[2];
				pthread_barrier_wait(&ready_barrier);
			} else if (uc.args[1] == STAGE_BUSY) {
				WRITE_ONCE(v->switch_ns, now_ns());
			} else {
				v->noise = uc.args[2];
				v->total = uc.args[3];
				if (__atomic_add_fetch(&nr_done, 1, __ATOMIC_SEQ_CST) == 1)
					sem_post(&first_done);
				/* Stay, so that the host can read our schedstat. */
				pthread_barrier_wait(&done_barrier);
			}
			break;
		case UCALL_DONE:
			return NULL;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			TEST_FAIL("Unknown ucall %lu", uc.cmd);
		}
	}
}

/* Read a small file into @buf; false if it cannot be read. */
static bool read_str(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return true;
}

/* Print @key=the contents of @path, or "unavailable". */
static void print_setting(const char *key, const char *path)
{
	char buf[64];

	printf("%s=%s\n", key, read_str(path, buf, sizeof(buf)) ? buf : "unavailable");
}

/* Open a /proc file to read it again and again with pread_str(). */
static int open_proc(const char *fmt, pid_t id)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), fmt, id);
	fd = open(path, O_RDONLY);
	TEST_ASSERT(fd >= 0, "open %s", path);
	return fd;
}

static void pread_str(int fd, char *buf, size_t size)
{
	ssize_t n = pread(fd, buf, size - 1, 0);

	TEST_ASSERT(n > 0, "read /proc file");
	buf[n] = 0;
}

/* A vCPU thread's time on the CPU and run delay: its schedstat. */
static void read_schedstat(struct vcpu_thread *v, struct sample *s)
{
	char buf[128], *p;

	pread_str(v->schedstat_fd, buf, sizeof(buf));
	s->stat[EXEC][v->idx] = strtoull(buf, &p, 10);
	TEST_ASSERT(*p == ' ', "malformed schedstat of vCPU %d: %s", v->idx, buf);
	s->stat[DELAY][v->idx] = strtoull(p + 1, NULL, 10);
}

static void stop_stressors(void)
{
	int i;

	for (i = 0; i < nr_stressors; i++) {
		if (stressors[i] > 0)
			kill(stressors[i], SIGKILL);
	}
	for (i = 0; i < nr_stressors; i++) {
		if (stressors[i] > 0)
			waitpid(stressors[i], NULL, 0);
		stressors[i] = 0;
	}
}

/*
 * A stressor's loop: spin, adding the time from one turn to the next to
 * the CPU it is on at the end of it.  A turn that spans a preemption counts
 * the wait on the runqueue it ends on.
 */
static void __noreturn stressor_spin(struct stressor_slot *slot)
{
	int cpu, prev_cpu = sched_getcpu();
	uint64_t t, prev = now_ns();

	for (;;) {
		cpu = sched_getcpu();
		t = now_ns();
		if (cpu >= 0 && cpu < CPU_SETSIZE)
			WRITE_ONCE(slot->ns[cpu], slot->ns[cpu] + t - prev);
		if (cpu != prev_cpu)
			WRITE_ONCE(slot->moves, slot->moves + 1);
		prev = t;
		prev_cpu = cpu;
	}
}

/* Move task @pid into the cgroup v2 directory @dir. */
static void move_to_cgroup(pid_t pid, const char *dir)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	f = fopen(path, "w");
	TEST_ASSERT(f, "open %s", path);
	TEST_ASSERT(fprintf(f, "%d\n", pid) > 0 && !fclose(f),
		    "move %d to %s", pid, dir);
}

/*
 * Fork the stressors, free to run on every CPU, before the VM exists: they
 * wait for the write end of a pipe to close, and then spin, keeping their
 * account as they go.  Returns that write end.
 */
static int fork_stressors(void)
{
	cpu_set_t all;
	int i, cpu, p[2];
	char c;

	TEST_ASSERT(!pipe(p), "pipe");
	slots = mmap(NULL, MAX_STRESSORS * sizeof(*slots), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(slots != MAP_FAILED, "mmap");
	CPU_ZERO(&all);
	for (cpu = 0; cpu < CPU_SETSIZE && cpu < get_nprocs_conf(); cpu++)
		CPU_SET(cpu, &all);
	fflush(stdout);
	fflush(stderr);
	for (i = 0; i < nr_stressors; i++) {
		stressors[i] = fork();
		TEST_ASSERT(stressors[i] >= 0, "fork");
		if (stressors[i]) {
			if (stressor_cgroup)
				move_to_cgroup(stressors[i], stressor_cgroup);
			continue;
		}
		close(p[1]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		(void)sched_setaffinity(0, sizeof(all), &all);
		if (read(p[0], &c, 1) < 0)
			_exit(1);
		stressor_spin(&slots[i]);
	}
	close(p[0]);
	atexit(stop_stressors);
	return p[1];
}

/*
 * Sample the vCPU threads' schedstats: all of them in the first sample
 * (@prev NULL), then only the turned-busy vCPU's.  The others are needed
 * at the ends of the run only, and are taken over from @prev.
 */
static void take_sample(struct sample *s, const struct sample *prev)
{
	int i, j;

	s->t = now_ns();
	for (i = 0; i < NR_VCPUS; i++) {
		if (!prev || (turn_busy && i == BUSY_VCPU)) {
			read_schedstat(&vcpus[i], s);
			continue;
		}
		for (j = 0; j < NR_STATS; j++)
			s->stat[j][i] = prev->stat[j][i];
	}
}

/* Sum the stressors' accounts for the first @ncpu CPUs. */
static void take_residency(struct residency_snap *r, int ncpu)
{
	int i, cpu;

	memset(r, 0, sizeof(*r));
	r->t = now_ns();
	for (i = 0; i < nr_stressors; i++) {
		r->moves += READ_ONCE(slots[i].moves);
		for (cpu = 0; cpu < ncpu; cpu++)
			r->ns[cpu] += READ_ONCE(slots[i].ns[cpu]);
	}
}

/* vCPU @v's schedstat field @k at @t, interpolated between the samples. */
static double stat_at(const struct sample *s, int n, int k, int v, uint64_t t)
{
	int i;

	if (t <= s[0].t)
		return s[0].stat[k][v];
	for (i = 1; i < n; i++) {
		if (s[i].t >= t)
			return s[i - 1].stat[k][v] +
			       (double)(s[i].stat[k][v] - s[i - 1].stat[k][v]) *
			       (t - s[i - 1].t) / (s[i].t - s[i - 1].t);
	}
	return s[n - 1].stat[k][v];
}

/*
 * vCPU @v's run-queue wait from @t1 to @t2, as a share of that time, from
 * its run delay.  The run delay grows by a whole wait when the wait ends:
 * where one ends in the interval, the share can come out above 1, and is
 * cut to 1.  Right over a whole run, whose end is read after every vCPU
 * ran again; in a short window, a wait shows only once it ended.
 */
static double wait_share(const struct sample *s, int n, int v, uint64_t t1,
			 uint64_t t2)
{
	double w;

	if (t2 <= t1)
		return 0;
	w = (stat_at(s, n, DELAY, v, t2) - stat_at(s, n, DELAY, v, t1)) / (t2 - t1);
	return min(w, 1.0);
}

/*
 * The share of the time from @t1 to @t2 that vCPU @v's thread was not on
 * its CPU.  A vCPU thread does not sleep while its guest runs, halted or
 * not, so that is its wait, as it happens: the time on the CPU grows as
 * the thread runs (up to a tick late), not when a wait ends.
 */
static double off_cpu_share(const struct sample *s, int n, int v, uint64_t t1,
			    uint64_t t2)
{
	double w;

	if (t2 <= t1)
		return 0;
	w = 1 - (stat_at(s, n, EXEC, v, t2) - stat_at(s, n, EXEC, v, t1)) / (t2 - t1);
	return max(min(w, 1.0), 0.0);
}

/*
 * The stressors' residency on each of @ncpu CPUs from @a to @b: the share
 * of that time each spent on the CPU, averaged over stressors.  Returns
 * their moves per second, per stressor.
 */
static double residency(const struct residency_snap *a,
			const struct residency_snap *b, int ncpu, double *res)
{
	double span = (double)(b->t - a->t) * nr_stressors;
	int cpu;

	for (cpu = 0; cpu < ncpu; cpu++)
		res[cpu] = span > 0 ? (b->ns[cpu] - a->ns[cpu]) / span : 0;
	return span > 0 ? (b->moves - a->moves) * 1e9 / span : 0;
}

static void print_list(const char *key, const double *v, int n)
{
	int i;

	printf("%s=", key);
	for (i = 0; i < n; i++)
		printf("%s%.4f", i ? "," : "", v[i]);
	printf("\n");
}

/*
 * With -W: the halting vCPUs' timer interrupts, and their lateness in the
 * guest, the 50th and 99th percentiles in microseconds (the upper bound of
 * their bucket), over both halting vCPUs.
 */
static void print_lateness(struct kvm_vm *vm)
{
	uint64_t sum[LATE_BUCKETS] = { 0 }, n = 0, seen = 0;
	int i, b, p50 = -1, p99 = -1;

	sync_global_from_guest(vm, late_hist);
	for (i = NR_METERS; i < NR_VCPUS; i++) {
		if (turn_busy && i == BUSY_VCPU)
			continue;
		for (b = 0; b < LATE_BUCKETS; b++) {
			sum[b] += late_hist[i][b];
			n += late_hist[i][b];
		}
	}
	for (b = 0; b < LATE_BUCKETS && n; b++) {
		seen += sum[b];
		if (p50 < 0 && seen * 2 >= n)
			p50 = b;
		if (p99 < 0 && seen * 100 >= n * 99)
			p99 = b;
	}
	printf("wake_period_us=%lu\n", wake_period_ns / 1000);
	printf("wake_timers=%lu\n", n);
	printf("wake_late_p50_us=%lu\n", p50 < 0 ? 0 : late_bucket_top(p50));
	printf("wake_late_p99_us=%lu\n", p99 < 0 ? 0 : late_bucket_top(p99));
}

static void help(const char *name)
{
	printf("usage: %s [-d seconds] [-s stressors] [-i] [-b] [-T threshold_ns] [-R fraction]\n"
	       "          [-W period_us] [-g cgroup_dir] [-w seconds]\n"
	       "  -d  run time (default 3)\n"
	       "  -w  warm-up before the run, not measured (default 2)\n"
	       "  -s  host busy-loop processes (default 2)\n"
	       "  -i  halting vCPUs' threads SCHED_IDLE (the reference)\n"
	       "  -b  vCPU 3 halts for the first half, then spins\n"
	       "  -T  meter gap threshold in ns (default 10x the median gap)\n"
	       "  -R  with -b: reference wait share for the recovery time\n"
	       "  -W  halting vCPUs wake every period_us; their timer lateness\n"
	       "  -g  run the stressors in this cgroup (v2) directory\n", name);
}

int main(int argc, char *argv[])
{
	uint64_t run_ns = 3000000000ULL, thr_ns = 0, t0, t_end, t_sw, t, next;
	uint64_t cpu0, cpu_end;
	double reference = -1, res[CPU_SETSIZE], v[NR_VCPUS], w, moves;
	int opt, i, n = 0, max_samples, ncpu, first, release_fd;
	struct residency_snap *rs;
	struct sample last;
	struct timespec ts;
	struct sample *s;
	struct kvm_vm *vm;
	uint64_t tsc_khz;
	cpu_set_t mask;

	while ((opt = getopt(argc, argv, "d:s:ibT:R:W:g:w:h")) != -1) {
		switch (opt) {
		case 'd':
			run_ns = atof(optarg) * 1e9;
			break;
		case 's':
			nr_stressors = atoi(optarg);
			break;
		case 'i':
			idle_halters = true;
			break;
		case 'b':
			turn_busy = true;
			break;
		case 'T':
			thr_ns = atoll(optarg);
			break;
		case 'R':
			reference = atof(optarg);
			break;
		case 'W':
			wake_period_ns = atof(optarg) * 1000;
			break;
		case 'g':
			stressor_cgroup = optarg;
			break;
		case 'w':
			warm_ns = atof(optarg) * 1e9;
			break;
		default:
			help(argv[0]);
			exit(opt == 'h' ? 0 : KSFT_SKIP);
		}
	}
	TEST_ASSERT(run_ns >= 2 * TRAIL_NS, "-d: at least %.1f s",
		    2.0 * TRAIL_NS / 1e9);
	TEST_ASSERT(nr_stressors >= 0 && nr_stressors <= MAX_STRESSORS,
		    "-s: 0 to %d stressors", MAX_STRESSORS);

	TEST_ASSERT(!sched_getaffinity(0, sizeof(mask), &mask), "sched_getaffinity");
	for (i = 0; i < NR_VCPUS; i++) {
		if (!CPU_ISSET(i, &mask))
			ksft_exit_skip("host CPUs 0-%d are needed, CPU %d is not available\n",
				       NR_VCPUS - 1, i);
	}
	TEST_REQUIRE(kvm_check_cap(KVM_CAP_X86_DISABLE_EXITS) &
		     KVM_X86_DISABLE_EXITS_HLT);
	ncpu = max(NR_VCPUS, get_nprocs_conf());
	ncpu = min(ncpu, CPU_SETSIZE);

	print_setting("sched_guest_halted", SWITCH_SYSCTL);
	print_setting("kvm_guest_halted", PARAM_DIR "guest_halted");
	print_setting("kvm_guest_halted_source", PARAM_DIR "guest_halted_source");
	printf("mode=%s\n", idle_halters ? "sched_idle" : "normal");
	printf("turned_busy=%d\n", turn_busy);
	printf("stressors=%d\n", nr_stressors);
	printf("warm_up_s=%.3f\n", warm_ns / 1e9);

	release_fd = fork_stressors();

	vm = vm_create(NR_VCPUS);
	vm_enable_cap(vm, KVM_CAP_X86_DISABLE_EXITS, KVM_X86_DISABLE_EXITS_HLT);
	for (i = 0; i < NR_VCPUS; i++)
		vcpus[i].vcpu = vm_vcpu_add(vm, i, guest_code);
	vm_install_exception_handler(vm, TIMER_VECTOR, guest_timer_handler);
	sync_global_to_guest(vm, wake_period_ns);
	sync_global_to_guest(vm, warm_ns);
	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);
	tsc_khz = __vcpu_ioctl(vcpus[0].vcpu, KVM_GET_TSC_KHZ, NULL);
	TEST_ASSERT(tsc_khz > 0, "KVM_GET_TSC_KHZ");
	printf("tsc_khz_kvm=%lu\n", tsc_khz);
	tsc_khz = measure_tsc_khz();
	TEST_ASSERT(tsc_khz > 0, "the TSC does not advance");
	printf("tsc_khz=%lu\n", tsc_khz);

	pthread_barrier_init(&ready_barrier, NULL, NR_VCPUS + 1);
	pthread_barrier_init(&done_barrier, NULL, NR_VCPUS + 1);
	TEST_ASSERT(!sem_init(&first_done, 0, 0), "sem_init");
	for (i = 0; i < NR_VCPUS; i++) {
		int role = i < NR_METERS ? ROLE_METER : ROLE_HALT;

		if (turn_busy && i == BUSY_VCPU)
			role = ROLE_HALT_BUSY;
		vcpus[i].idx = i;
		vcpu_args_set(vcpus[i].vcpu, 6, i, role, tsc_khz, run_ns,
			      run_ns / 2, thr_ns);
		TEST_ASSERT(!pthread_create(&vcpus[i].thread, NULL,
					    vcpu_thread_main, &vcpus[i]),
			    "pthread_create vCPU %d", i);
	}

	max_samples = run_ns / SAMPLE_NS * 2 + 64;
	s = calloc(max_samples, sizeof(*s));
	/* At the start, when vCPU 3 turned busy, and at the end. */
	rs = calloc(3, sizeof(*rs));
	TEST_ASSERT(s && rs, "calloc");

	for (i = 0; i < NR_VCPUS; i++) {
		while (!READ_ONCE(vcpus[i].tid))
			usleep(1000);
		vcpus[i].schedstat_fd = open_proc("/proc/self/task/%d/schedstat",
						  vcpus[i].tid);
	}

	/*
	 * Every vCPU has entered the guest and waits: start them all, and
	 * the stressors, and measure from the end of the warm-up.
	 */
	pthread_barrier_wait(&ready_barrier);
	close(release_fd);
	ts.tv_sec = warm_ns / 1000000000ULL;
	ts.tv_nsec = warm_ns % 1000000000ULL;
	while (nanosleep(&ts, &ts))
		;
	take_sample(&s[n++], NULL);
	take_residency(&rs[0], ncpu);
	t0 = s[0].t;
	cpu0 = thread_cpu_ns();
	next = t0;
	/*
	 * Until the first vCPU reaches the end of its run: sleep, or with -b
	 * sample the turned-busy vCPU's run delay.
	 */
	while (!turn_busy && sem_wait(&first_done))
		;
	while (turn_busy && n < max_samples - 1) {
		next += SAMPLE_NS;
		ts.tv_sec = next / 1000000000ULL;
		ts.tv_nsec = next % 1000000000ULL;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL))
			;
		if (__atomic_load_n(&nr_done, __ATOMIC_SEQ_CST))
			break;
		if (!rs[1].t && (READ_ONCE(vcpus[BUSY_VCPU].switch_ns) ||
				 now_ns() >= t0 + run_ns / 2))
			take_residency(&rs[1], ncpu);
		take_sample(&s[n], &s[n - 1]);
		n++;
	}
	take_sample(&s[n], &s[n - 1]);
	n++;
	take_residency(&rs[2], ncpu);
	t_end = s[n - 1].t;
	cpu_end = thread_cpu_ns();
	stop_stressors();
	/*
	 * The run delay grows when a thread gets to run, not while it waits:
	 * read it again when every vCPU has run since the stressors stopped,
	 * so that the waits under way at the end of the window count, as if
	 * they ended with it.
	 */
	while (__atomic_load_n(&nr_done, __ATOMIC_SEQ_CST) < NR_VCPUS)
		usleep(1000);
	for (i = 0; i < NR_VCPUS; i++) {
		read_schedstat(&vcpus[i], &last);
		s[n - 1].stat[DELAY][i] = last.stat[DELAY][i];
	}
	pthread_barrier_wait(&done_barrier);
	for (i = 0; i < NR_VCPUS; i++)
		pthread_join(vcpus[i].thread, NULL);
	TEST_ASSERT(n >= 2, "no samples taken");

	printf("window_s=%.3f\n", (t_end - t0) / 1e9);
	printf("samples=%d\n", n);
	printf("sampler_load=%.4f\n", (double)(cpu_end - cpu0) / (t_end - t0));
	for (i = 0; i < NR_METERS; i++)
		v[i] = vcpus[i].thr * 1e6 / tsc_khz;
	print_list("threshold_ns", v, NR_METERS);
	for (i = 0; i < NR_VCPUS; i++)
		v[i] = wait_share(s, n, i, t0, t_end);
	print_list("vcpu_wait", v, NR_VCPUS);
	print_list("meter_wait", v, NR_METERS);
	print_list("halt_wait", v + NR_METERS, NR_VCPUS - NR_METERS);
	for (i = 0; i < NR_METERS; i++)
		v[i] = vcpus[i].total ?
		       1 - (double)vcpus[i].noise / vcpus[i].total : 0;
	print_list("availability", v, NR_METERS);
	moves = residency(&rs[0], &rs[2], ncpu, res);
	print_list("stressor_residency", res, ncpu);
	printf("stressor_moves_per_s=%.2f\n", moves);
	if (wake_period_ns)
		print_lateness(vm);

	if (!turn_busy)
		return 0;

	/*
	 * The time the vCPU turned busy, or if it was kept from running long
	 * enough to, as a SCHED_IDLE vCPU can be, the middle of the run, when
	 * it was to.
	 */
	t_sw = vcpus[BUSY_VCPU].switch_ns;
	printf("busy_turned=%d\n", t_sw > t0 && t_sw < t_end);
	if (t_sw <= t0 || t_sw >= t_end)
		t_sw = t0 + (t_end - t0) / 2;
	printf("busy_switch_s=%.3f\n", (t_sw - t0) / 1e9);
	printf("busy_wait_before=%.4f\n", off_cpu_share(s, n, BUSY_VCPU, t0, t_sw));
	printf("busy_wait_after=%.4f\n", off_cpu_share(s, n, BUSY_VCPU, t_sw, t_end));
	printf("busy_availability=%.4f\n", vcpus[BUSY_VCPU].total ?
	       1 - (double)vcpus[BUSY_VCPU].noise / vcpus[BUSY_VCPU].total : 0);
	printf("busy_bins=");
	for (t = t_sw; t + BIN_NS <= t_end; t += BIN_NS)
		printf("%s%.4f", t == t_sw ? "" : ",",
		       off_cpu_share(s, n, BUSY_VCPU, t, t + BIN_NS));
	printf("\n");
	for (first = 0; first < n && s[first].t < t_sw; first++)
		;
	TEST_ASSERT(rs[1].t, "no residency taken in the second half of the run");
	residency(&rs[1], &rs[2], ncpu, res);
	print_list("stressor_residency_after", res, ncpu);

	if (reference < 0)
		return 0;
	/*
	 * The time from the switch to the first sample from which the wait is
	 * back at the reference: at most 1.1 times it over the TRAIL_NS after
	 * the sample, and over the rest of the run; -1 if there is none.  A
	 * window that ends at the sample instead lags by up to its length, so
	 * the first sample, at least TRAIL_NS after the switch, at which the
	 * wait over the TRAIL_NS before it is that low is given beside it.
	 */
	printf("busy_reference=%.4f\n", reference);
	for (i = first; i < n && s[i].t + TRAIL_NS <= t_end; i++) {
		w = off_cpu_share(s, n, BUSY_VCPU, s[i].t, s[i].t + TRAIL_NS);
		if (w <= reference * 1.1 &&
		    off_cpu_share(s, n, BUSY_VCPU, s[i].t, t_end) <= reference * 1.1)
			break;
	}
	printf("busy_recovery_ms=%.0f\n",
	       i < n && s[i].t + TRAIL_NS <= t_end ? (s[i].t - t_sw) / 1e6 : -1.0);
	for (i = first; i < n; i++) {
		if (s[i].t < t_sw + TRAIL_NS)
			continue;
		w = off_cpu_share(s, n, BUSY_VCPU, s[i].t - TRAIL_NS, s[i].t);
		if (w <= reference * 1.1)
			break;
	}
	printf("busy_recovery_trailing_ms=%.0f\n",
	       i < n ? (s[i].t - t_sw) / 1e6 : -1.0);
	return 0;
}
