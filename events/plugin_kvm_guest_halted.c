// SPDX-License-Identifier: LGPL-2.1
/*
 * libtraceevent plugin for the kvm:guest_halted tracepoint.
 *
 * trace-cmd report, perf script and every other libtraceevent user load it
 * from the standard plugin directory or $TRACEEVENT_PLUGIN_DIR.  It adds
 * what the kernel's print format cannot compute: the guest time of the
 * interval in ms and its halted part as a percentage, an estimate for the
 * sampled source.  The kernel's print format follows, with every field and
 * the exit reason by name.
 *
 * It handles only kvm:guest_halted, so it can sit beside Debian's
 * plugin_kvm.so, which handles kvm_exit and others.
 */
#include <stdint.h>
#include <stdio.h>

#include <traceevent/event-parse.h>
#include <traceevent/trace-seq.h>

#define SOURCE_SAMPLED	2

/*
 * Return 1 always: libtraceevent then prints the event with the kernel's own
 * print format after what the handler printed.
 */
static int guest_halted_handler(struct trace_seq *s, struct tep_record *record,
				struct tep_event *event, void *context)
{
	unsigned long long gtime_ns, halted_ns, source;

	(void)context;

	/* Without these fields, the kernel's print format says all there is. */
	if (tep_get_field_val(NULL, event, "gtime_ns", record, &gtime_ns, 0) ||
	    tep_get_field_val(NULL, event, "halted_ns", record, &halted_ns, 0) ||
	    tep_get_field_val(NULL, event, "source", record, &source, 0) ||
	    !gtime_ns || halted_ns > gtime_ns)
		return 1;

	trace_seq_printf(s, "(%.3f ms guest, %.1f%% halted%s) ", gtime_ns / 1e6,
			 100.0 * halted_ns / gtime_ns,
			 source == SOURCE_SAMPLED ? ", estimate" : "");
	return 1;
}

int TEP_PLUGIN_LOADER(struct tep_handle *tep)
{
	tep_register_event_handler(tep, -1, "kvm", "guest_halted",
				   guest_halted_handler, NULL);
	return 0;
}

void TEP_PLUGIN_UNLOADER(struct tep_handle *tep)
{
	tep_unregister_event_handler(tep, -1, "kvm", "guest_halted",
				     guest_halted_handler, NULL);
}
