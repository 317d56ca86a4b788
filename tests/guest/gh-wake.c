// SPDX-License-Identifier: GPL-2.0
/*
 * gh-wake: host wake-up latency of a waker/wakee pair, for the gtime-halted
 * scheduler benchmarks.
 *
 *   gh-wake SECONDS [PERIOD_US]
 *
 * Two threads, free to run on any CPU.  Every PERIOD_US (2000 by default)
 * the waker reads CLOCK_MONOTONIC and writes it to a pipe; the wakee,
 * blocked in read(), takes the time again once it runs: the difference is
 * one wake-up latency.  At the end it prints, as key=value lines, the
 * number of wake-ups, the 50th, 99th percentile and the largest latency
 * in microseconds, and the share of wake-ups on each CPU (the CPU the
 * wakee ran on), so that a caller can tell how often it ran beside a given
 * task.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CPUS	64

static int fds[2];
static uint64_t period_ns = 2000000;
static uint64_t end_ns;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void *waker(void *arg)
{
	struct timespec next;
	uint64_t t;

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		next.tv_nsec += period_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		t = now_ns();
		if (t >= end_ns)
			t = 0;		/* the last one: tells the wakee to stop */
		if (write(fds[1], &t, sizeof(t)) != sizeof(t) || !t)
			return NULL;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	unsigned long on_cpu[MAX_CPUS] = { 0 };
	uint64_t *lat, t, sent;
	size_t n = 0, max;
	pthread_t thread;
	double seconds;
	int cpu, i;

	if (argc < 2 || argc > 3 || (seconds = atof(argv[1])) <= 0) {
		fprintf(stderr, "usage: gh-wake SECONDS [PERIOD_US]\n");
		return 2;
	}
	if (argc == 3)
		period_ns = strtoull(argv[2], NULL, 0) * 1000;
	if (period_ns < 1000) {
		fprintf(stderr, "gh-wake: a period of at least 1 us\n");
		return 2;
	}
	max = seconds * 1e9 / period_ns + 2;
	lat = calloc(max, sizeof(*lat));
	if (!lat || pipe(fds)) {
		perror("gh-wake");
		return 1;
	}
	end_ns = now_ns() + (uint64_t)(seconds * 1e9);
	if (pthread_create(&thread, NULL, waker, NULL)) {
		perror("gh-wake: pthread_create");
		return 1;
	}
	while (read(fds[0], &sent, sizeof(sent)) == sizeof(sent) && sent) {
		t = now_ns();
		cpu = sched_getcpu();
		if (n < max)
			lat[n++] = t - sent;
		if (cpu >= 0 && cpu < MAX_CPUS)
			on_cpu[cpu]++;
	}
	pthread_join(thread, NULL);
	if (!n) {
		fprintf(stderr, "gh-wake: no wake-up\n");
		return 1;
	}
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("wakeups=%zu\n", n);
	printf("p50_us=%.1f\n", lat[n / 2] / 1e3);
	printf("p99_us=%.1f\n", lat[n * 99 / 100] / 1e3);
	printf("max_us=%.1f\n", lat[n - 1] / 1e3);
	printf("on_cpu=");
	for (i = 0; i < MAX_CPUS && i < sysconf(_SC_NPROCESSORS_CONF); i++)
		printf("%s%.3f", i ? "," : "", (double)on_cpu[i] / n);
	printf("\n");
	free(lat);
	return 0;
}
