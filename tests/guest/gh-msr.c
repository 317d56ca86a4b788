// SPDX-License-Identifier: GPL-2.0
/*
 * gh-msr: read TSC and MPERF on one CPU of the test VM (L1), twice, and
 * print their deltas, so that a test can tell whether that CPU's MPERF ran.
 *
 *   gh-msr CPU MS     read IA32_TIME_STAMP_COUNTER (0x10) and IA32_MPERF
 *                     (0xe7) on CPU through /dev/cpu/CPU/msr, MS
 *                     milliseconds apart
 *
 * Prints "key=value" lines: tsc_delta, mperf_delta and mperf_per_tsc.
 * Each read is an IPI to CPU, which wakes it for a moment: the deltas
 * include that, a few microseconds per read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MSR_TSC		0x10
#define MSR_MPERF	0xe7

static uint64_t rdmsr(int fd, uint32_t msr)
{
	uint64_t val;

	if (pread(fd, &val, sizeof(val), msr) != sizeof(val)) {
		fprintf(stderr, "gh-msr: read MSR %#x: %s\n", msr, strerror(errno));
		exit(1);
	}
	return val;
}

int main(int argc, char *argv[])
{
	uint64_t tsc0, mperf0, tsc1, mperf1;
	struct timespec ts;
	char path[64];
	long ms;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: gh-msr CPU MS\n");
		return 2;
	}
	ms = strtol(argv[2], NULL, 0);
	snprintf(path, sizeof(path), "/dev/cpu/%s/msr", argv[1]);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "gh-msr: %s: %s\n", path, strerror(errno));
		return 1;
	}
	mperf0 = rdmsr(fd, MSR_MPERF);
	tsc0 = rdmsr(fd, MSR_TSC);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = ms % 1000 * 1000000;
	nanosleep(&ts, NULL);
	mperf1 = rdmsr(fd, MSR_MPERF);
	tsc1 = rdmsr(fd, MSR_TSC);
	printf("tsc_delta=%llu\n", (unsigned long long)(tsc1 - tsc0));
	printf("mperf_delta=%llu\n", (unsigned long long)(mperf1 - mperf0));
	printf("mperf_per_tsc=%.4f\n",
	       tsc1 != tsc0 ? (double)(mperf1 - mperf0) / (tsc1 - tsc0) : 0.0);
	return 0;
}
