/* The destination's RAM path: one lane per migration connection, each
 * with its own connection (its own io_uring), receive buffer and zstd
 * context. Connection 0 is read by incoming.c's thread (it also carries
 * HELLO, the state and END); connections 1..N-1 by a thread each, which
 * stops at its connection's END. Records are decoded where they were
 * received (no copy of the stream), checked (each connection has its own
 * order checker, which also keeps every RAM range inside the connection's
 * own stripes), and their pages written straight into guest memory: a
 * zstd frame of one range is decompressed in place, and the pages of a
 * RAW record are received there from the socket once its head (header and
 * ranges) is here and checked, without passing through the buffer. Any lane's error
 * stops all of them; the first one is what vmm reports. */
#ifndef MIGRATE_RECEIVER_H
#define MIGRATE_RECEIVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/uio.h>

#include "migrate/bitmap.h"
#include "migrate/ram.h"
#include "migrate/stream.h"
#include "migrate/transport.h"

#define RECV_BUF_SIZE (STREAM_HDR_SIZE + STREAM_MAX_PAYLOAD + (1u << 20))
#define RECV_TIMEOUT_MS 60000 /* with no byte on any connection (mig_timeout_ms overrides) */

struct vm;

/* What the lanes share. */
struct recv_shared {
	struct vm *vm;
	struct stream_region regions[2];
	struct stream_layout layout;
	unsigned nlanes;
	_Atomic bool abort;          /* a lane failed: the others stop */
	/* When a byte last came on any connection: a connection whose share
	 * of a pass is done stays silent while the others still send, which
	 * is no reason to give up on it (a slow link among several). */
	_Atomic uint64_t progress_ns;
	/* Pages some RAM record accounted for (any encoding, SKIP too): a
	 * stream may end only when every page of RAM is here. */
	struct bitmap covered;
	pthread_mutex_t lock;
	char err[320];               /* the first error, one line */
};

struct recv_lane {
	struct recv_shared *rx;
	unsigned index;
	struct mig_conn conn;
	bool conn_open;
	uint8_t *buf;                /* bytes [start, have) are not decoded yet */
	size_t start, have, used;    /* used: the record last returned */
	struct ram_decompressor zd;
	bool zd_on;
	uint8_t *scratch;            /* a zstd frame of several ranges */
	struct stream_seq seq;
	pthread_t thread;
	bool thread_started;
	int rc;
	/* A RAW RAM record whose pages are still to come: recv_lane_next()
	 * returned its head, recv_load_ram() receives its pages straight
	 * into guest memory, the first pend_have of them from pend_data. */
	bool pending;
	const uint8_t *pend_data;
	size_t pend_have;
	struct iovec iov[STREAM_RAM_MAX_RANGES];
	uint64_t t_wait, t_decode, t_write; /* ns, for the trace */
	uint64_t bytes_direct;       /* page bytes received straight into guest memory */
	uint64_t bytes, records;
	uint64_t records_ram;        /* RAM records so far */
};

/* 0 or -ENOMEM. */
int recv_shared_init(struct recv_shared *rx, struct vm *vm);
void recv_shared_free(struct recv_shared *rx);
/* Pages of guest RAM no RAM record has accounted for yet. */
uint64_t recv_missing_pages(const struct recv_shared *rx);
/* Records the first error (one line) and stops every lane; returns rc
 * (-EIO when rc >= 0). */
int recv_fail(struct recv_shared *rx, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Lane index on fd (which it owns from now on). 0 or -errno. */
int recv_lane_init(struct recv_shared *rx, struct recv_lane *l, unsigned index, int fd);
void recv_lane_free(struct recv_lane *l);
/* The next record: its type, with rec pointing into the lane's buffer
 * until the next call; or a negative code after recv_fail() (also when
 * another lane failed, or nothing came on any connection for timeout_ms).
 * A RAW RAM record may come as its head alone (rec->ram.data NULL): its
 * pages are still on the connection, and the caller must pass it to
 * recv_load_ram() before it asks for the next record. */
int recv_lane_next(struct recv_lane *l, struct stream_record *rec, int timeout_ms);
/* Writes a RAM record's pages into guest memory (receiving them there
 * first when only the head came). 0 or an error (failed). */
int recv_load_ram(struct recv_lane *l, const struct stream_record *rec);
/* Sends ACK(phase) on the lane's connection (from the thread reading it). */
int recv_lane_ack(struct recv_lane *l, enum stream_phase phase);
/* Lanes 1..N-1: a thread that applies RAM, and answers SYNC, until the
 * connection's END. */
int recv_lane_start(struct recv_lane *l);
/* Waits for the lane's thread: 0 once its END came, or its error. */
int recv_lane_join(struct recv_lane *l);

/* Its figures so far to the trace (trace.h). */
void recv_lane_trace(const struct recv_lane *l, const char *what);

/* Guest memory while the stream comes in: small pages, so that a page
 * written for the first time costs a 4 KiB clear instead of a 2 MiB one
 * (transparent huge pages), and back to huge-page advice afterwards. */
void recv_ram_begin(struct vm *vm);
void recv_ram_end(struct vm *vm);

#endif
