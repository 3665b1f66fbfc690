/* Fault injection and wait bounds for tests; see failpoint.h. */
#include "migrate/failpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/trace.h"
#include "vmm/util.h"

bool failpoint(const char *spec, const char *point)
{
	const char *action;
	size_t n = strlen(point);

	if (!spec || strncmp(spec, point, n) || spec[n] != ':')
		return false;
	action = spec + n + 1;
	log_err("migrate: fault injected at %s: %s", point, action);
	if (!strcmp(action, "kill"))
		raise(SIGKILL);
	else if (!strcmp(action, "stop"))
		raise(SIGSTOP);
	else if (!strcmp(action, "reset"))
		return true;
	return false;
}

int mig_timeout_ms(int dflt_ms)
{
	/* Read once: the sender asks for every buffer it waits on. */
	static _Atomic int cached = -1;
	int v = atomic_load_explicit(&cached, memory_order_relaxed);

	if (v < 0) {
		const char *s = getenv("VMM_MIGRATE_TIMEOUT_MS");
		uint64_t n;

		v = s && !parse_uint(s, 1, 3600000, &n) ? (int)n : 0;
		atomic_store_explicit(&cached, v, memory_order_relaxed);
	}
	return v ? v : dflt_ms;
}
