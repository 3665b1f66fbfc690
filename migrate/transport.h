/* The migration socket layer, used by both ends: URIs (tcp:HOST:PORT,
 * tcp:[v6addr%if]:PORT, unix:PATH), bounded listen/accept/connect, and
 * struct mig_conn, one socket driven through its own io_uring.
 *
 * Sending (mig_conn_send/flush). The caller queues buffers that stay valid
 * until mig_conn_flush() returns 0; up to `depth` of them are in flight.
 * Ordering: independent send SQEs on one stream socket may run out of
 * order (a send that has to wait for socket space is retried later, and a
 * newer one can be issued inline before it), so the queued buffers go to
 * the kernel as one linked chain (IOSQE_IO_LINK, MSG_WAITALL) and the next
 * chain is submitted only when the previous one has completed. A short
 * send ends its chain (the kernel cancels the rest with -ECANCELED) and the
 * remainder is re-queued in order. Without MSG_WAITALL (a test knob) the
 * kernel would not break the chain on a short send, so each chain is then
 * one send long.
 *
 * Scatter/gather (mig_conn_sendv/recvv): an iovec array is one send slot,
 * sent with sendmsg in the same FIFO and chains as plain buffers, so RAM
 * pages go out straight from guest memory and come in straight into it.
 *
 * Errors: a send-side -errno from the kernel becomes the sending direction's
 * sticky error, returned by every later send and flush. The receiving
 * direction has its own sticky error, so a peer that refused and closed can
 * still be read (its ERROR record explains the refusal) after our sends
 * failed with -EPIPE; mig_conn_error() gives the first error of either.
 *
 * No global state: one mig_conn per connection (--connections N opens N).
 * Not thread-safe: one thread drives a mig_conn. */
#ifndef MIGRATE_TRANSPORT_H
#define MIGRATE_TRANSPORT_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TRANSPORT_ADDR_TEXT 300

struct transport_addr {
	int family;                 /* AF_INET, AF_INET6 or AF_UNIX */
	socklen_t addrlen;
	struct sockaddr_storage sa; /* ready for bind/connect */
	uint16_t port;              /* TCP; 0 = any (listen only) */
	char text[TRANSPORT_ADDR_TEXT]; /* "1.2.3.4:5", "[fe80::1%eth0]:5", "unix:/p" */
};

/* Parses a migration URI; names are resolved with getaddrinfo (the first
 * answer). Returns 0, or a negative code with one line in err ("missing
 * port", "port out of range", "bad brackets", "empty path", "unknown
 * scheme", ...). Port 0 is accepted (the kernel picks one; listen only). */
int transport_parse_uri(const char *uri, struct transport_addr *out, char *err, size_t errlen);

/* A listening socket (SO_REUSEADDR for TCP). An existing unix socket file
 * is -EADDRINUSE, never replaced: probing it by connecting would hand a live
 * receiver an empty connection, and unlinking it would steal its path.
 * Returns the fd or -errno (err set). */
int transport_listen(const struct transport_addr *a, char *err, size_t errlen);
/* Waits at most timeout_ms (< 0: forever) for a connection: the new fd
 * (blocking, close-on-exec, TCP_NODELAY), -ETIMEDOUT or -errno. */
int transport_accept(int lfd, int timeout_ms, char *err, size_t errlen);
/* The same, but gives up with -EINTR ("stopped by a signal") as soon as
 * stop_fd is readable (vmm's signalfd: a signal ends the wait for a
 * source while signals stay blocked in every thread). */
int transport_accept_or_stop(int lfd, int timeout_ms, int stop_fd, char *err, size_t errlen);
/* Non-blocking connect bounded by timeout_ms (< 0: forever): a blocking
 * fd with TCP_NODELAY, -ETIMEDOUT or -errno. */
int transport_connect(const struct transport_addr *a, int timeout_ms, char *err, size_t errlen);
/* The port a TCP socket is bound to (after listening on port 0), or -errno. */
int transport_local_port(int fd);

/* user_data tags (top byte); sends carry their slot index below. */
enum mig_tag {
	MIG_TAG_SEND = 1,
	MIG_TAG_RECV = 2,
	MIG_TAG_TIMEOUT = 3,
	MIG_TAG_CANCEL = 4,
};

struct mig_send {
	const uint8_t *buf;         /* a plain buffer (mig_conn_send), or NULL */
	size_t len;                 /* total bytes of the slot */
	size_t off;                 /* bytes confirmed sent */
	size_t sub;                 /* bytes asked for by the SQE in flight */
	bool inflight;              /* an SQE for it is in the current chain */
	/* An iovec slot (mig_conn_sendv): what is left of the caller's array,
	 * advanced in place as completions confirm bytes; msg (and part, when
	 * one entry is longer than an SQE may ask for) describe the SQE in
	 * flight and stay untouched until it completes. */
	struct iovec *iov;
	unsigned iovcnt;
	struct msghdr msg;
	struct iovec part;
};

struct mig_conn {
	int fd;
	struct io_uring ring;
	bool ring_ok;
	unsigned depth;             /* send slots (buffers queued at once) */
	struct mig_send *slots;     /* FIFO ring of depth slots */
	unsigned head, count;       /* oldest queued slot, slots in use */
	unsigned chain_pending;     /* CQEs still due for the chain in flight */
	bool chain_broken;          /* a send of the current chain came back short */
	int send_flags;             /* MSG_NOSIGNAL | MSG_WAITALL */
	int send_error;             /* sticky, sending direction */
	int recv_error;             /* sticky, receiving direction */
	bool recv_busy;             /* a recv SQE is in flight */
	bool recv_done;
	int recv_res;
	struct msghdr recv_msg;     /* mig_conn_recvv's; one recv at a time */
	struct iovec recv_part;
	/* Statistics. */
	uint64_t bytes_queued;      /* handed to mig_conn_send */
	uint64_t bytes_sent;        /* confirmed by completions */
	uint64_t bytes_received;
	uint64_t send_sqes;         /* send SQEs submitted */
	uint64_t short_sends;       /* sends the kernel completed short (re-queued) */
	uint64_t chains;            /* chains submitted */
};

/* Takes ownership of fd (mig_conn_close closes it). depth: 1..4096 send
 * slots. 0 or -errno (fd not closed then). */
int mig_conn_init(struct mig_conn *c, int fd, unsigned depth);
/* Shuts the socket down, waits (bounded) until the kernel has finished with
 * every buffer, frees the ring, closes the fd. Safe on a failed init and
 * twice. */
void mig_conn_close(struct mig_conn *c);

/* Queues buf[0, len) for sending; it must stay valid until mig_conn_flush()
 * returns 0 (or the connection is closed). Waits for a free slot when all
 * depth are in use. 0 or the sticky error. */
int mig_conn_send(struct mig_conn *c, const void *buf, size_t len);
/* Queues the bytes of iov[0, iovcnt) as one slot, in order with the
 * buffers of mig_conn_send. The array and the memory it points at must stay
 * valid until those bytes are sent (mig_conn_wait_sent, mig_conn_flush), so
 * a caller cannot reuse one array for the next call before that. The
 * transport modifies the array in place: when the slot goes out in pieces
 * (a short send, or more than 1 GiB), the entry a piece ends inside gets its
 * iov_base/iov_len advanced past the bytes sent (entries sent whole are left
 * as they were). A total of 0 queues nothing. 0, -EINVAL
 * (iovcnt not 1..IOV_MAX, or the total overflows), or as mig_conn_send. */
int mig_conn_sendv(struct mig_conn *c, struct iovec *iov, unsigned iovcnt);
/* Waits until everything queued is sent: 0, the sticky error (when nothing
 * is in flight any more), or -ETIMEDOUT (buffers still in use: flush again
 * or close). timeout_ms < 0: forever. */
int mig_conn_flush(struct mig_conn *c, int timeout_ms);
/* Waits until the first `bytes` bytes ever queued (bytes_queued counts
 * them) are sent, so that a caller cycling through several buffers can
 * reuse the oldest one without waiting for the newer ones: 0, the sticky
 * error, or -ETIMEDOUT. */
int mig_conn_wait_sent(struct mig_conn *c, uint64_t bytes, int timeout_ms);
/* Bytes queued and not yet confirmed sent. */
size_t mig_conn_unsent(const struct mig_conn *c);

/* Receives 1..len bytes: their count, 0 on orderly EOF, -ETIMEDOUT (the
 * connection stays usable), or -errno (sticky for receiving). */
ssize_t mig_conn_recv(struct mig_conn *c, void *buf, size_t len, int timeout_ms);
/* mig_conn_recv into iov[0, iovcnt) (1..IOV_MAX entries, some maybe
 * empty): 1..total bytes (filling the entries in order), 0 on orderly EOF,
 * -ETIMEDOUT, -errno (sticky), or -EINVAL when there is no room at all. The
 * array is not advanced: callers receiving a fixed amount do that with
 * mig_iov_advance and the count returned. */
ssize_t mig_conn_recvv(struct mig_conn *c, struct iovec *iov, unsigned iovcnt, int timeout_ms);
/* Exactly len bytes within timeout_ms: 0, -ECONNRESET on EOF before len,
 * -ETIMEDOUT (sticky when some bytes were already consumed: the stream
 * position is lost), or -errno. */
int mig_conn_recv_all(struct mig_conn *c, void *buf, size_t len, int timeout_ms);

/* Advances the iovec array *iov of *iovcnt entries by n bytes in place:
 * entries used up, and empty ones, are skipped (*iov and *iovcnt move past
 * them, the entries themselves unchanged), and the entry n ends inside gets
 * its iov_base/iov_len moved on. Afterwards (*iov)[0] is non-empty unless
 * *iovcnt is 0. Returns the bytes advanced: n, or the total when less. */
size_t mig_iov_advance(struct iovec **iov, unsigned *iovcnt, size_t n);

/* The first sticky error of either direction, or 0. */
int mig_conn_error(const struct mig_conn *c);

#endif
