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
#include <sys/resource.h>
#include <time.h>

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

/* CPU time the whole process has used, in ms (for the trace). */
static inline double mig_trace_cpu_ms(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* CPU time the calling thread has used, in ms (for the trace). */
static inline double mig_trace_thread_cpu_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#endif
