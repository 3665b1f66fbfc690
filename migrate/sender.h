/* The source's RAM path: one lane per migration connection, each a thread
 * with its own connection (its own io_uring), record buffers and zstd
 * context. RAM is split among the lanes by guest physical address in
 * stripes of 1 << SEND_STRIPE_SHIFT bytes (stripe i goes on connection
 * i % N, docs/migration-stream.md), so a page is always sent on the same
 * connection and the order on that one connection is all the receiver
 * needs: a page sent in one pass is never overtaken by its older copy.
 *
 * The coordinator (precopy.c) owns the dirty log and the send bitmap
 * between passes: after each sync it re-protects the whole send set at
 * once (ram_sender_protect: one KVM_CLEAR_DIRTY_LOG per memory slot).
 * During a pass each lane takes the bits of its own stripes atomically,
 * reads their residency with one pagemap read per stripe, and sends them:
 * data pages as RAW or zstd records of up to 1 MiB (RAW straight from guest
 * memory, zstd always from a copy of the pages, see sender_compress.c,
 * on the lane's thread or, with --compress-threads N, on N workers shared
 * by the lanes while the lane goes on sending: compress_pool.h), zero
 * pages gathered
 * into ZERO records of many ranges. Free page hints (ram_sender_hint)
 * take pages out of the send bitmap from the balloon's thread while
 * lanes run: both sides take bits atomically.
 *
 * Why the whole send set is protected before a hint round starts, and
 * hints never touch the dirty log: the guest may take a hinted block back
 * at any time (its balloon driver gives hinted blocks up under memory
 * pressure) and write to it before the hint is even processed here. Such
 * a write is only sure to reach the next sync if the page was already
 * write-protected when the guest allocated it for the hint; clearing its
 * dirty bit on the hint could erase that write. With every page protected
 * from the sync on, a hint only takes the page out of this pass. */
#ifndef MIGRATE_SENDER_H
#define MIGRATE_SENDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "migrate/bitmap.h"
#include "migrate/compress_pool.h"
#include "migrate/dirty.h"
#include "migrate/failpoint.h"
#include "migrate/migration.h"
#include "migrate/ram.h"
#include "migrate/stream.h"
#include "migrate/transport.h"

#define SEND_STRIPE_SHIFT 22 /* 4 MiB: a hint block, and one clear and one pagemap read */
#define SEND_STRIPE_PAGES (1u << (SEND_STRIPE_SHIFT - GUEST_PAGE_SHIFT))
#define SEND_CHUNK_PAGES  256 /* pages of one RAW or zstd record: 1 MiB */
#define SEND_LANE_BUFS    4   /* 1 MiB records in flight per connection: each costs its first-touch faults in every migration */
#define SEND_BUF_SIZE (STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE + \
		       STREAM_RAM_MAX_RANGES * STREAM_RAM_RANGE_SIZE + \
		       SEND_CHUNK_PAGES * GUEST_PAGE_SIZE + 8192)
#define SEND_IO_TIMEOUT_MS mig_timeout_ms(30000) /* a reply, a buffer sent */
#define SEND_MAX_LANES 16

struct ram_sender;

/* What the destination sends back on a connection, as it came: a recv may
 * bring more than one record. Connection 0's is shared by the coordinator
 * and lane 0, which never read at the same time. */
struct reply_buf {
	uint8_t buf[STREAM_HDR_SIZE + 2048];
	size_t have;
};

/* The next record from the destination on c: its type, with rec pointing
 * into rb until reply_consume(); or a STREAM_E_* code, -EPROTO (too long),
 * -ECONNRESET (closed) or -errno. */
int reply_next(struct mig_conn *c, struct reply_buf *rb, struct stream_record *rec,
	       size_t *used, int timeout_ms);
void reply_consume(struct reply_buf *rb, size_t used);

/* What lanes count; the coordinator sums them into the migration's figures. */
struct lane_stats {
	_Atomic uint64_t pages_raw, pages_zstd, pages_zero;
	_Atomic uint64_t skipped_reported, skipped_untouched;
	_Atomic uint64_t raw_bytes_compressed, zstd_bytes;
	_Atomic uint64_t bytes_sent;
};

/* Pages that go without data (ZERO, SKIP), gathered over a whole pass:
 * a range costs 12 bytes however long it is. */
struct nodata_list {
	struct stream_range r[STREAM_RAM_MAX_RANGES];
	unsigned nr;
	uint64_t pages;
};

/* A record buffer whose batch a compression worker has (sender_compress.c):
 * the record goes out once the worker is done, as zstd, or RAW from guest
 * memory when the frame saved nothing. */
struct lane_job {
	struct zjob z;
	struct stream_ram_enc e;
	struct stream_range r[SEND_CHUNK_PAGES];
	unsigned nr;
	bool pending;
};

struct send_lane {
	struct ram_sender *rs;
	unsigned index;
	struct mig_conn *conn;      /* lane 0: the coordinator's connection */
	struct mig_conn own;        /* lanes 1..N-1 */
	bool own_open;
	struct reply_buf *reply;    /* lane 0: the coordinator's */
	struct reply_buf own_reply;
	pthread_t thread;
	bool thread_started;
	uint8_t *bufs[SEND_LANE_BUFS];
	/* A RAW record goes as its head (in the buffer) and its pages, sent
	 * from guest memory: one iovec per range. */
	struct iovec iov[SEND_LANE_BUFS][1 + SEND_CHUNK_PAGES];
	uint64_t buf_end[SEND_LANE_BUFS]; /* conn->bytes_queued after the buffer's record */
	unsigned next_buf;
	uint8_t *staging;           /* the data pages, copied for zstd */
	struct lane_job *jobs;      /* [SEND_LANE_BUFS] with compression workers, else NULL */
	struct ram_compressor zc;
	bool zc_on;
	struct ram_auto autoc;
	/* --compress auto's link figure (sender.c, note_link): a mark taken
	 * after each buffer wait, the intervals during which the socket was
	 * busy throughout, and raw bursts that measure the link when
	 * compressing leaves it idle. */
	bool link_timed;            /* not TCP: no delivery rate (tcp_rate.h), so timed here */
	uint64_t trace_link_ns;     /* the last link line of the trace */
	uint64_t mark_ns, mark_sent, mark_queued;
	uint64_t busy_bytes, busy_ns;
	unsigned since_link;        /* data records since the last link figure */
	unsigned probe_left;        /* records of a raw burst still to go */
	bool probe_busy;            /* the socket was busy during the burst */
	uint64_t probe_ns, probe_bytes;
	uint64_t mask[SEND_STRIPE_PAGES / 64];    /* pages taken from one stripe */
	uint64_t pagemap[SEND_STRIPE_PAGES];
	/* Pages waiting for their record, in ascending order. */
	struct stream_range data_r[SEND_CHUNK_PAGES];
	const void *data_src[SEND_CHUNK_PAGES]; /* where each page is in guest memory */
	unsigned ndr, nd;
	struct nodata_list zero;    /* ZERO: read as zero here */
	struct nodata_list skip;    /* SKIP (bulk pass): hinted free, or never touched */
	uint64_t ram_pages;         /* pages in RAM records on this connection (its END) */
	uint64_t pages_read;        /* of them, read from guest memory (ram_sender_read_pages) */
	uint64_t bulk_unlogged;     /* bulk-pass pages sent though the first sync missed them */
	struct lane_stats st;
	uint64_t t_compress, t_wait; /* ns, for the trace */
};

/* One pass over the send bitmap. Every pass but the last ends with SYNC
 * on each connection and waits for its answer: the pass is over when the
 * destination has applied it, so the vCPUs never stop while the
 * destination still works through a backlog, and the measured rate is
 * the whole path's. */
struct send_pass {
	bool bulk;                  /* the first pass: it accounts for every page (sent or SKIP) */
	bool iter;                  /* every lane starts with ITER iteration */
	uint32_t iteration;
	bool precopy_done;          /* the last pass: lane 0 starts with PRECOPY_DONE, */
	bool end;                   /* and lanes 1..N-1 end with their END */
};

struct ram_sender {
	struct migration *m;
	struct vm *vm;
	struct dirty_log *dirty;
	struct bitmap send;         /* pages to send in this pass */
	struct bitmap hinted;       /* pages hinted free since the migration began */
	uint64_t npages;
	unsigned nlanes;
	struct send_lane *lanes;
	int pagemap_fd;
	struct zpool *zpool;        /* --compress-threads N > 0, else NULL */
	bool skip_free;
	uint64_t deadline_ns;
	_Atomic uint64_t skipped_hinted;
	_Atomic bool abort;         /* a lane failed: the others stop */
	pthread_mutex_t lock;
	pthread_cond_t cond;        /* a pass starts, a lane finishes */
	bool sync_init;
	unsigned gen, running;
	bool quit;
	struct send_pass pass;
	int error;                  /* the pass's first lane error */
};

/* Allocates everything for nlanes lanes; lane 0 sends on conn0 and reads
 * the destination's answers into reply0. 0 or -errno
 * (the migration's error set). */
int ram_sender_init(struct ram_sender *rs, struct migration *m, struct dirty_log *dirty,
		    struct mig_conn *conn0, struct reply_buf *reply0, unsigned nlanes);
/* Starts the lane threads: the lanes' connections must be open. */
int ram_sender_start(struct ram_sender *rs);
/* Runs one pass on every lane and waits for it; the figures are published
 * to the migration while it runs. 0 or the first error (the migration's
 * error set). */
int ram_sender_pass(struct ram_sender *rs, const struct send_pass *p);
/* Bytes sent on every connection so far. */
uint64_t ram_sender_bytes(struct ram_sender *rs);
/* Pages read from guest memory so far (between passes): sent with data,
 * or as ZERO once read. What a pass works for; pages skipped as free or
 * never touched (SKIP, or ZERO unread) cost next to nothing and are not
 * counted. */
uint64_t ram_sender_read_pages(const struct ram_sender *rs);
/* Sums the lanes' figures into the migration's (under its lock). */
void ram_sender_publish(struct ram_sender *rs);
/* Re-protects every page of the send set (after a sync, before the
 * pass and before a hint round starts). 0 or -errno with err set. */
int ram_sender_protect(struct ram_sender *rs, char *err, size_t errlen);
/* A free block the guest hinted during a round: its pages leave this
 * pass's send set. They stay protected, so a write after the guest takes
 * them back shows up in the next sync. Called on the balloon's thread;
 * [first_page, first_page + npages) lies in RAM. */
void ram_sender_hint(struct ram_sender *rs, uint64_t first_page, uint64_t npages);
/* Lane i (1..N-1) sends on fd from now on (it owns it). 0 or -errno (fd
 * not closed then). */
int ram_sender_lane_open(struct ram_sender *rs, unsigned i, int fd);
/* Stops and joins the lanes and closes lanes 1..N-1's connections,
 * sending ERROR with the migration's error on each first when it failed. Lane 0's
 * buffers stay valid until ram_sender_free, so close connection 0 in
 * between. */
void ram_sender_stop(struct ram_sender *rs, bool failed);
/* Shuts every connection down (a fault injected for tests): whatever waits
 * on one fails. Safe from any thread. */
void ram_sender_shutdown(struct ram_sender *rs);
void ram_sender_free(struct ram_sender *rs);

/* Between sender.c (a lane's pass) and sender_lanes.c (the lanes' life). */
/* One pass of lane l: 0 or the first error (the migration's error set). */
int sender_lane_pass(struct send_lane *l, const struct send_pass *p);
/* Records the first error (prefixed with the connection when there are
 * several), stops the other lanes, returns rc (-EIO if rc >= 0). */
int sender_lane_fail(struct send_lane *l, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Queues the record of len bytes (or the encoder's error) in buffer slot. */
int sender_queue_record(struct send_lane *l, unsigned slot, ssize_t len);
/* A RAW record in buffer slot: its head there, its npages pages (src[i]
 * where page i is in guest memory) sent from where they are. */
int sender_send_raw(struct send_lane *l, unsigned slot, const struct stream_range *r,
		    unsigned nr, const void *const *src, unsigned npages);

/* Between sender.c and sender_compress.c (compression). */
/* Whether the waiting batch should be compressed (--compress, and auto's
 * decision and link probes). */
bool sender_want_compress(struct send_lane *l);
/* A batch of raw bytes went RAW without trying to compress it. */
void sender_probe_done(struct send_lane *l, size_t raw);
/* Compresses the waiting batch on this thread into e: the frame's size,
 * or <= 0 to send it RAW. */
ssize_t sender_compress_here(struct send_lane *l, struct stream_ram_enc *e, size_t raw);
/* Hands the waiting batch to a worker, to go out from buffer slot once
 * compressed. 0 or an error (the migration's error set). */
int sender_compress_submit(struct send_lane *l, unsigned slot);
/* Sends what the workers finished; with wait, waits for every batch of
 * this lane first (the end of a pass). 0 or the first error. */
int sender_compress_reap(struct send_lane *l, bool wait);
/* Buffer slot is about to be reused: if a worker has its batch, waits and
 * sends it. 0 or an error. */
int sender_compress_wait_slot(struct send_lane *l, unsigned slot);
/* After an error: waits for the workers to let go of this lane's batches,
 * sending nothing. */
void sender_compress_abandon(struct send_lane *l);

#endif
