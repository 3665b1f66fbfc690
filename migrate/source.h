/* The source side of live migration, shared by its two files: source.c
 * (the migration's life: the control requests, the thread, connecting and
 * HELLO, the end: cleanup, the final phase, an unknown outcome) and
 * precopy.c (the passes, hint rounds, auto-converge, stop-and-copy, the
 * state and the commit). The RAM itself goes through the lanes of
 * sender.c. See docs/migration.md. Private to migrate/. */
#ifndef MIGRATE_SOURCE_H
#define MIGRATE_SOURCE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "migrate/dirty.h"
#include "migrate/failpoint.h"
#include "migrate/migration.h"
#include "migrate/sender.h"
#include "migrate/stream.h"
#include "migrate/transport.h"

#define IO_TIMEOUT_MS SEND_IO_TIMEOUT_MS

/* Everything the coordinating thread owns. */
struct sender {
	struct migration *m;
	struct vm *vm;
	struct mig_conn conn;           /* connection 0: control records, and lane 0's RAM */
	bool conn_open;
	struct reply_buf reply;         /* the destination's records on connection 0 */
	struct dirty_log dirty;
	bool dirty_on;
	struct ram_sender rs;           /* the lanes, and the send bitmap */
	bool hinting;                   /* a hint round runs */
	bool hint_due;                  /* a round ran: DONE is due */
	uint64_t hinted_before;         /* pages hinted out before this round */
	bool paused;
	bool committed;                 /* COMMIT is (being) sent: never resume from here */
	uint64_t session;
	uint32_t section_id;
	uint32_t state_count;
	double pages_per_s;             /* measured over the last pass */
	_Atomic unsigned throttle_pct;
	_Atomic bool throttle_stop;
	pthread_t throttler;
	bool throttler_started;
	uint64_t deadline_ns;
};

/* Writes to the figures `vmm migrate` reads, under their lock. */
#define STAT_SET(s, stmt)                            \
	do {                                         \
		pthread_mutex_lock(&(s)->m->lock);   \
		stmt;                                \
		pthread_mutex_unlock(&(s)->m->lock); \
	} while (0)

/* source.c */
void source_set_phase(struct migration *m, enum migrate_phase phase);
/* Records the first error (one line) and returns rc (-EIO if rc >= 0). */
int source_fail(struct sender *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* -ECANCELED, -ETIMEDOUT (with the error set) or 0. */
int source_check_abort(struct sender *s);
/* A fault for tests at point (failpoint.h): 0, or failed after a reset. */
int source_inject(struct sender *s, const char *point);
/* Queues a record on connection 0 (len < 0: the encoder's error). */
int source_send_record(struct sender *s, const uint8_t *buf, ssize_t len);
/* The next reply on connection 0 must be ACK(phase) with status 0. */
int source_expect_ack(struct sender *s, enum stream_phase phase);

/* precopy.c */
/* The bulk pass, the iterations, stop-and-copy and the commit. 0 once the
 * destination said RUNNING; else failed, with s->committed telling
 * whether the outcome is unknown. */
int precopy_run(struct sender *s);
/* Auto-converge's throttle (percent of the time the vCPUs are held) after
 * a pass that sent `sent` pages (data and zero pages, not skipped ones)
 * while the guest, throttled pct, dirtied `dirtied`. Unchanged while a pass
 * at least halves what is left (dirtied <= sent / 2: QEMU's default
 * trigger, throttle-trigger-threshold 50). Otherwise raised at once to
 * what should make the next pass leave a quarter of what it sends (the
 * dirty rate taken as proportional to the share of time the guest runs),
 * by at least 10 points: QEMU instead needs two such one-second periods
 * per step of 10 points from 20, which is what made a busy guest take
 * 6-9 passes here. Never above PRECOPY_THROTTLE_MAX (as QEMU's default:
 * the guest always gets some time, and a guest held 100% would be stopped
 * without that counting as downtime). */
#define PRECOPY_THROTTLE_MAX 99
unsigned precopy_throttle_next(unsigned pct, uint64_t dirtied, uint64_t sent);
/* Stops auto-converge and ends the hint rounds (on failure too). */
void precopy_stop_throttle(struct sender *s);
void precopy_hints_end(struct sender *s);

#endif
