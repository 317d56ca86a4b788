// SPDX-License-Identifier: GPL-2.0-only
/*
 * gh-chrt POLICY PRIORITY COMMAND [ARG...]: run COMMAND under a scheduling
 * policy, as util-linux's chrt does (busybox in the test VM has none).
 * POLICY is other, batch, idle, fifo or rr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
	const char *name;
	int policy;
} policies[] = {
	{ "other", SCHED_OTHER },
	{ "batch", SCHED_BATCH },
	{ "idle", SCHED_IDLE },
	{ "fifo", SCHED_FIFO },
	{ "rr", SCHED_RR },
};

int main(int argc, char **argv)
{
	struct sched_param sp = { 0 };
	char *end;
	size_t i;

	if (argc < 4) {
		fprintf(stderr, "usage: gh-chrt other|batch|idle|fifo|rr PRIORITY COMMAND [ARG...]\n");
		return 2;
	}
	for (i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
		if (!strcmp(argv[1], policies[i].name))
			break;
	errno = 0;
	sp.sched_priority = (int)strtol(argv[2], &end, 10);
	if (i == sizeof(policies) / sizeof(policies[0]) || *end || errno) {
		fprintf(stderr, "gh-chrt: bad policy or priority: %s %s\n", argv[1], argv[2]);
		return 2;
	}
	if (sched_setscheduler(0, policies[i].policy, &sp)) {
		perror("gh-chrt: sched_setscheduler");
		return 1;
	}
	execvp(argv[3], argv + 3);
	perror("gh-chrt: exec");
	return 127;
}
