/* Test hooks of live migration (docs/migration.md, "Testing faults"):
 * - POINT:ACTION puts a fault at one named step of one side: the source
 *   takes it from `vmm migrate --fault`, the destination from
 *   VMM_MIGRATE_FAULT in its environment. POINT is e.g. "source-bulk" or
 *   "dest-ready" (the list is in the docs); ACTION is "kill" (SIGKILL, at
 *   once), "stop" (SIGSTOP: the process freezes there until SIGCONT) or
 *   "reset" (the caller drops its connections, as a link reset would).
 * - VMM_MIGRATE_TIMEOUT_MS=N replaces every bound on a migration's waits
 *   (replies, idle connections, READY, COMMIT, RUNNING), so that tests of
 *   silent peers take seconds, not minutes.
 * Neither does anything unless set. */
#ifndef MIGRATE_FAILPOINT_H
#define MIGRATE_FAILPOINT_H

#include <stdbool.h>

/* True when spec ("POINT:ACTION", or NULL) puts a "reset" at point; kill
 * and stop never return to the caller before the process is killed or
 * continued. */
bool failpoint(const char *spec, const char *point);

/* dflt_ms, or VMM_MIGRATE_TIMEOUT_MS when that is set. */
int mig_timeout_ms(int dflt_ms);

#endif
