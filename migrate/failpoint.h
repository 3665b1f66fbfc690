/* Test hooks of live migration, from the environment (docs/migration.md,
 * "Testing faults"):
 * - VMM_MIGRATE_FAULT=POINT:ACTION puts a fault at one named step of one
 *   side. POINT is e.g. "source-bulk" or "dest-ready" (the list is in the
 *   docs); ACTION is "kill" (SIGKILL, at once), "stop" (SIGSTOP: the
 *   process freezes there until SIGCONT) or "reset" (the caller drops its
 *   connections, as a link reset would, and goes on).
 * - VMM_MIGRATE_TIMEOUT_MS=N replaces every bound on a migration's waits
 *   (replies, idle connections, READY, COMMIT, RUNNING), so that tests of
 *   silent peers take seconds, not minutes.
 * Neither does anything unless set. */
#ifndef MIGRATE_FAILPOINT_H
#define MIGRATE_FAILPOINT_H

#include <stdbool.h>

/* True when the fault at point says "reset"; kill and stop never return
 * to the caller before the process is killed or continued. */
bool failpoint(const char *point);

/* dflt_ms, or VMM_MIGRATE_TIMEOUT_MS when that is set. */
int mig_timeout_ms(int dflt_ms);

#endif
