/* Live migration as the rest of vmm sees it: the options of `vmm migrate`,
 * the figures it reports, the source side (a thread started by the control
 * socket's "migrate" command, precopy.c) and the destination side
 * (`vmm run --incoming`, incoming.c). */
#ifndef MIGRATE_MIGRATION_H
#define MIGRATE_MIGRATION_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;

enum migrate_compress { COMPRESS_AUTO, COMPRESS_ZSTD, COMPRESS_NONE };

struct migrate_options {
	char uri[256];
	unsigned downtime_ms;  /* switch to stop-and-copy at or below this estimate */
	unsigned timeout_s;    /* 0: none */
	bool skip_free;        /* skip hinted, reported and never-touched pages */
	enum migrate_compress compress;
	unsigned connections;  /* parallel connections, each with its own lane (1..16) */
	unsigned compress_threads; /* zstd workers shared by the lanes (0: each lane compresses) */
	bool drop_guest_cache; /* the hint round asks the guest to drop its caches first */
	int dirty_mode;        /* enum dirty_mode: auto, or one forced (for tests) */
	char fault[64];        /* POINT:ACTION injected on this side (failpoint.h), or "" */
};

enum migrate_phase {
	MIGRATE_IDLE = 0,
	MIGRATE_SETUP,
	MIGRATE_BULK,
	MIGRATE_ITERATE,
	MIGRATE_STOP_COPY,
	MIGRATE_COMMITTED,   /* COMMIT sent: the source never resumes on its own from here */
	/* Final phases. */
	MIGRATE_COMPLETED,   /* the destination said RUNNING */
	MIGRATE_FAILED,      /* before COMMIT: the source guest runs again */
	MIGRATE_CANCELLED,
	MIGRATE_UNKNOWN,     /* COMMIT sent, RUNNING never seen: the guest stays paused here */
};

struct migrate_stats {
	uint64_t start_ns, setup_ns, paused_ns, end_ns;
	uint64_t bytes_wire;
	uint64_t pages_raw, pages_zstd, pages_zero;
	uint64_t skipped_hinted, skipped_reported, skipped_untouched;
	uint64_t raw_bytes_compressed, zstd_bytes; /* for the compression ratio */
	unsigned iterations;
	unsigned hint_rounds;     /* free page hint rounds started */
	uint64_t remaining_pages;
	double dirty_pages_per_s;
	double bandwidth_bps;
	unsigned throttle_pct;
	uint64_t throttled_ns;     /* time auto-converge held the vCPUs stopped */
	bool guest_cache_dropped;  /* the hint round asked the guest to drop its caches */
	uint64_t drop_cache_wait_ns; /* the bulk pass waited this long for that round */
};

struct migration {
	struct vm *vm;
	struct migrate_options opt;
	pthread_t thread;
	bool thread_started;
	_Atomic bool cancel;
	pthread_mutex_t lock; /* phase, error, stats for readers */
	pthread_cond_t cond;
	enum migrate_phase phase;
	bool final_seen;      /* `vmm migrate` (a status query with "follow") saw the final phase */
	char error[320];
	const char *dirty_log; /* the dirty-log mode in use, once logging is on */
	struct migrate_stats st;
};

/* Parses the "migrate" control request's options (defaults filled in). */
int migrate_options_from_json(json_t *req, struct migrate_options *opt, char *err, size_t errlen);
/* Why opt's drop_guest_cache will have no effect on vm, or NULL if it will. */
const char *migrate_drop_cache_note(struct vm *vm, const struct migrate_options *opt);
/* Starts the source side in its own thread. 0, -EBUSY or -errno. */
int migrate_start(struct vm *vm, const struct migrate_options *opt, char *err, size_t errlen);
/* The status and figures, for "migrate-status". follow: the query comes
 * from the `vmm migrate` that follows the migration; once it saw the final
 * phase the source may exit (other readers, monitors, do not count). */
json_t *migrate_status_json(struct vm *vm, bool follow);
/* Asks a running migration to stop; the source resumes. -ENOENT if none,
 * -EBUSY once COMMIT was sent (too late: the destination may run it). */
int migrate_cancel(struct vm *vm);
/* Whether a migration is between its start and its final phase. */
bool migrate_running(struct vm *vm);
/* Whether the last migration ended with its outcome unknown (the guest is
 * held paused here). */
bool migrate_outcome_unknown(struct vm *vm);
/* `vmm resume --force`: the operator decided that the guest did not start
 * at the destination; it runs here again. -ENOENT when no migration left
 * the guest paused. */
int migrate_force_resume(struct vm *vm);
/* Joins the thread at tear-down. */
void migrate_destroy(struct vm *vm);

/* Destination: waits for one source on uri, receives and checks the whole
 * stream, loads it into vm, says READY and waits for the source's COMMIT.
 * 0 once committed (the VM must run now), or -1 after printing one line
 * (it must not run). The VM must not have run. */
int migrate_incoming(struct vm *vm, const char *uri);
/* The same on one connection already made (fd, which it owns): a source
 * whose HELLO asks for more connections is refused. For the fuzz target
 * of a whole stream (tests/fuzz/fuzz_incoming.c). */
int migrate_incoming_fd(struct vm *vm, int fd);
/* Destination, once the vCPUs of a committed VM run: tells the source
 * (RUNNING), which may then end. */
void migrate_incoming_running(struct vm *vm);

#endif
