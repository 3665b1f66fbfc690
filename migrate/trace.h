/* Migration timeline for profiling: with VMM_MIGRATE_TRACE set in the
 * environment, each event goes to stderr as "migrate-trace <ms> <event>",
 * <ms> on CLOCK_MONOTONIC so that a source and a destination on one host
 * line up. Costs one getenv the first time and a branch after that. */
#ifndef MIGRATE_TRACE_H
#define MIGRATE_TRACE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "vmm/util.h"

static inline bool mig_trace_on(void)
{
	static int on = -1;

	if (on < 0)
		on = getenv("VMM_MIGRATE_TRACE") != NULL;
	return on;
}

static inline void mig_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void mig_trace(const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	if (!mig_trace_on())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "migrate-trace %.3f %s\n", (double)now_ns() / 1e6, msg);
}

#endif
