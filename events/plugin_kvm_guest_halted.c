// SPDX-License-Identifier: LGPL-2.1
/*
 * libtraceevent plugin for the kvm:guest_halted tracepoint.
 *
 * trace-cmd report, perf script and every other libtraceevent user load it
 * from the standard plugin directory or $TRACEEVENT_PLUGIN_DIR.  It prints
 * every field as name=value, the guest time and halted time of the interval
 * in ms as well, and the halted part of the interval as a percentage,
 * which the kernel's print format cannot compute.
 *
 * It handles only kvm:guest_halted, so it can sit beside Debian's
 * plugin_kvm.so, which handles kvm_exit and others.
 */
#include <stdint.h>
#include <stdio.h>

#include <traceevent/event-parse.h>
#include <traceevent/trace-seq.h>

#define SOURCE_MPERF	1
#define SOURCE_SAMPLED	2

/* The isa field is encoded as in kvm:kvm_exit. */
static const char *isa_name(unsigned long long isa)
{
	switch (isa) {
	case 1:
		return "VMX";
	case 2:
		return "SVM";
	default:
		return "unknown";
	}
}

static const char *source_name(unsigned long long source)
{
	switch (source) {
	case SOURCE_MPERF:
		return "mperf";
	case SOURCE_SAMPLED:
		return "sampled";
	default:
		return "unknown";
	}
}

static int guest_halted_handler(struct trace_seq *s, struct tep_record *record,
				struct tep_event *event, void *context)
{
	unsigned long long vcpu_id, exit_reason, isa, tsc_delta, mperf_delta;
	unsigned long long gtime_ns, halted_ns, halted_cycles, source, derived;

	(void)context;

	/* A field missing from the format, or the record: say which. */
	if (tep_get_field_val(s, event, "vcpu_id", record, &vcpu_id, 1) ||
	    tep_get_field_val(s, event, "exit_reason", record, &exit_reason, 1) ||
	    tep_get_field_val(s, event, "isa", record, &isa, 1) ||
	    tep_get_field_val(s, event, "tsc_delta", record, &tsc_delta, 1) ||
	    tep_get_field_val(s, event, "mperf_delta", record, &mperf_delta, 1) ||
	    tep_get_field_val(s, event, "gtime_ns", record, &gtime_ns, 1) ||
	    tep_get_field_val(s, event, "halted_ns", record, &halted_ns, 1) ||
	    tep_get_field_val(s, event, "halted_cycles", record, &halted_cycles, 1) ||
	    tep_get_field_val(s, event, "source", record, &source, 1) ||
	    tep_get_field_val(s, event, "derived", record, &derived, 1))
		return 0;

	trace_seq_printf(s, "vcpu_id=%llu gtime_ns=%llu (%.3f ms) halted_ns=%llu (%.3f ms",
			 vcpu_id, gtime_ns, gtime_ns / 1e6, halted_ns, halted_ns / 1e6);
	if (gtime_ns)
		trace_seq_printf(s, ", %.1f%% halted", 100.0 * halted_ns / gtime_ns);
	trace_seq_printf(s, ") source=%s%s tsc_delta=%llu mperf_delta=%llu",
			 source_name(source),
			 source == SOURCE_SAMPLED ? " (estimate)" : "",
			 tsc_delta, mperf_delta);
	trace_seq_printf(s, " derived=%llu%s halted_cycles=%llu exit_reason=%llu isa=%llu (%s)",
			 derived, derived ? " (tsc/mperf from gtime)" : "",
			 halted_cycles, exit_reason, isa, isa_name(isa));
	return 0;
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
