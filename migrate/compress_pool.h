/* Compression workers for the source's lanes (`vmm migrate
 * --compress-threads N`). Without them a lane compresses a batch on its
 * own thread, and the socket work of sending (which io_uring does in the
 * lane's own task, inline or as task work) waits for it. With them a lane
 * hands a batch over and goes on scanning and sending the batches before
 * it, while a worker copies the batch's pages and compresses the copy into
 * the lane's record buffer: compressing and sending overlap, and one
 * connection can use more than one CPU for zstd.
 *
 * A worker compresses a copy, never guest memory itself: zstd reads its
 * input more than once, and a byte the guest changes in between could make
 * the frame decode to bytes the page never held (sender_compress.c,
 * sender_compress_here).
 *
 * Jobs belong to their submitter, who must wait for each one before it
 * reuses the job or its destination, and before zpool_free. The pool has
 * no global state (tests/unit/test_compress_pool.c). */
#ifndef MIGRATE_COMPRESS_POOL_H
#define MIGRATE_COMPRESS_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "migrate/ram.h"

#define ZPOOL_MAX_THREADS 16
#define ZPOOL_MAX_PAGES 256 /* pages of one job: a 1 MiB record */

struct zjob {
	/* Set by the submitter. */
	const void *src[ZPOOL_MAX_PAGES]; /* the pages, in order */
	unsigned npages;
	void *dst;
	size_t cap;
	/* Set by the worker, valid once zjob_done(). */
	ssize_t len;      /* the frame's size, -ENOSPC (not smaller), or RAM_E_ZSTD */
	uint64_t ns;      /* time spent copying and compressing */
	_Atomic bool done;
	struct zjob *next;
};

struct zworker {
	struct zpool *pool;
	pthread_t thread;
	bool started;
	struct ram_compressor zc;
	bool zc_on;
	uint8_t *staging;
};

struct zpool {
	pthread_mutex_t lock;
	pthread_cond_t work;      /* a job was queued, or quit */
	pthread_cond_t done;      /* a job finished */
	struct zjob *head, *tail; /* queued, not yet taken */
	bool quit;
	unsigned nthreads;
	size_t page_size;
	struct zworker w[ZPOOL_MAX_THREADS];
	bool init;
};

/* nthreads workers (1..ZPOOL_MAX_THREADS), each with its own zstd context
 * at level, frames with or without zstd's checksum, and a staging buffer
 * of ZPOOL_MAX_PAGES pages of page_size. Threads start with every signal
 * blocked. 0 or -errno (nothing left to free then). */
int zpool_init(struct zpool *p, unsigned nthreads, size_t page_size, int level, bool checksum);
/* Queues j (src, npages, dst, cap set; npages 1..ZPOOL_MAX_PAGES). */
void zpool_submit(struct zpool *p, struct zjob *j);
/* Whether j is finished; never blocks. */
bool zjob_done(const struct zjob *j);
/* Waits until j is finished and returns its len. */
ssize_t zpool_wait(struct zpool *p, struct zjob *j);
/* Stops and joins the workers. Every submitted job must have been waited for. */
void zpool_free(struct zpool *p);

#endif
