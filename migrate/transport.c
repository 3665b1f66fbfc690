/* The migration socket layer (see transport.h): URI parsing, bounded
 * listen/accept/connect, and mig_conn, which drives one socket through its
 * own io_uring in the manner of liburing's examples: the request type and
 * slot are packed into user_data, one loop waits, dispatches every CQE and
 * advances the CQ, and short sends are re-queued for their remainder. */
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_SQE_LEN   (1u << 30) /* cqe->res is an int */
#define MAX_DEPTH     4096
#define CLOSE_WAIT_NS (5ull * 1000000000ull)
#define SEND_WAIT_MS  30000      /* a full send queue that does not drain */
#define RECV_SLACK_NS 1000000000ll /* backstop past a recv's link timeout */

/* ---- time ---- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* A deadline in ns, or -1 for none (timeout_ms < 0). */
static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ns() + (int64_t)timeout_ms * 1000000ll;
}

/* Milliseconds left (rounded up, at least 0), or -1 without a deadline. */
static int ms_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ns();
	if (left <= 0)
		return 0;
	left = (left + 999999) / 1000000;
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

static __attribute__((format(printf, 3, 4))) void seterr(char *err, size_t errlen,
							  const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- URIs ---- */

/* "bad migration URI 'U': WHY" and -EINVAL. */
static __attribute__((format(printf, 4, 5))) int bad_uri(char *err, size_t errlen,
							  const char *uri, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	seterr(err, errlen, "bad migration URI '%.200s': %s", uri, why);
	return -EINVAL;
}

static int parse_port(const char *s, const char *uri, uint16_t *port, char *err, size_t errlen)
{
	unsigned long v = 0;
	size_t n;

	if (!*s)
		return bad_uri(err, errlen, uri, "missing port (tcp:HOST:PORT)");
	n = strspn(s, "0123456789");
	if (s[n])
		return bad_uri(err, errlen, uri, "bad port '%.20s' (a number, 0-65535)", s);
	for (size_t i = 0; i < n && v <= 65535; i++)
		v = v * 10 + (unsigned long)(s[i] - '0');
	if (v > 65535)
		return bad_uri(err, errlen, uri, "port out of range (0-65535)");
	*port = (uint16_t)v;
	return 0;
}

/* Resolves host (numeric only when numeric6) into out. */
static int resolve(const char *host, bool numeric6, const char *uri, struct transport_addr *out,
		   char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	char num[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = numeric6 ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = numeric6 ? AI_NUMERICHOST : 0;
	r = getaddrinfo(host, NULL, &hints, &res);
	if (r != 0 || !res) {
		if (numeric6)
			return bad_uri(err, errlen, uri, "bad IPv6 address '%.100s' (%s)", host,
				       r ? gai_strerror(r) : "no address");
		return bad_uri(err, errlen, uri, "cannot resolve '%.100s': %s", host,
			       r ? gai_strerror(r) : "no address");
	}
	if ((res->ai_family != AF_INET && res->ai_family != AF_INET6) ||
	    res->ai_addrlen > sizeof(out->sa)) {
		freeaddrinfo(res);
		return bad_uri(err, errlen, uri, "'%.100s' is not an IP address", host);
	}
	out->family = res->ai_family;
	out->addrlen = res->ai_addrlen;
	memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (out->family == AF_INET)
		((struct sockaddr_in *)&out->sa)->sin_port = htons(out->port);
	else
		((struct sockaddr_in6 *)&out->sa)->sin6_port = htons(out->port);
	if (getnameinfo((struct sockaddr *)&out->sa, out->addrlen, num, sizeof(num), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(num, sizeof(num), "?");
	if (out->family == AF_INET6)
		snprintf(out->text, sizeof(out->text), "[%s]:%u", num, out->port);
	else
		snprintf(out->text, sizeof(out->text), "%s:%u", num, out->port);
	return 0;
}

static int parse_tcp(const char *rest, const char *uri, struct transport_addr *out, char *err,
		     size_t errlen)
{
	char host[256];
	const char *end, *port;
	size_t hlen;
	bool v6 = rest[0] == '[';
	int r;

	if (v6) {
		end = strchr(rest, ']');
		if (!end)
			return bad_uri(err, errlen, uri, "bad brackets: '[' without ']'");
		if (end == rest + 1)
			return bad_uri(err, errlen, uri, "bad brackets: empty IPv6 address");
		if (memchr(rest + 1, '[', (size_t)(end - rest - 1)) || strchr(end + 1, '[') ||
		    strchr(end + 1, ']'))
			return bad_uri(err, errlen, uri, "bad brackets");
		if (end[1] == '\0')
			return bad_uri(err, errlen, uri, "missing port (tcp:[ADDR]:PORT)");
		if (end[1] != ':')
			return bad_uri(err, errlen, uri, "bad brackets: ':PORT' must follow ']'");
		rest++;
		hlen = (size_t)(end - rest);
		port = end + 2;
	} else {
		if (strchr(rest, '[') || strchr(rest, ']'))
			return bad_uri(err, errlen, uri, "bad brackets: '[' must start the host");
		end = strrchr(rest, ':');
		if (!end)
			return bad_uri(err, errlen, uri, "missing port (tcp:HOST:PORT)");
		hlen = (size_t)(end - rest);
		if (memchr(rest, ':', hlen))
			return bad_uri(err, errlen, uri,
				       "IPv6 addresses need brackets (tcp:[ADDR]:PORT)");
		if (hlen == 0)
			return bad_uri(err, errlen, uri,
				       "missing host (0.0.0.0 or [::] listens on every address)");
		port = end + 1;
	}
	if (hlen >= sizeof(host))
		return bad_uri(err, errlen, uri, "host too long");
	memcpy(host, rest, hlen);
	host[hlen] = '\0';
	r = parse_port(port, uri, &out->port, err, errlen);
	if (r)
		return r;
	return resolve(host, v6, uri, out, err, errlen);
}

static int parse_unix(const char *path, const char *uri, struct transport_addr *out, char *err,
		      size_t errlen)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->sa;
	size_t len = strlen(path);

	if (len == 0)
		return bad_uri(err, errlen, uri, "empty path (unix:PATH)");
	if (len >= sizeof(sun->sun_path))
		return bad_uri(err, errlen, uri, "path too long (at most %zu bytes)",
			       sizeof(sun->sun_path) - 1);
	out->family = AF_UNIX;
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, len + 1);
	out->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	snprintf(out->text, sizeof(out->text), "unix:%s", path);
	return 0;
}

int transport_parse_uri(const char *uri, struct transport_addr *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!uri || !*uri)
		return bad_uri(err, errlen, "", "empty (use tcp:HOST:PORT or unix:PATH)");
	if (!strncmp(uri, "tcp:", 4))
		return parse_tcp(uri + 4, uri, out, err, errlen);
	if (!strncmp(uri, "unix:", 5))
		return parse_unix(uri + 5, uri, out, err, errlen);
	return bad_uri(err, errlen, uri, "unknown scheme (use tcp:HOST:PORT or unix:PATH)");
}

/* ---- sockets ---- */

static bool is_tcp(int fd)
{
	int dom = 0;
	socklen_t len = sizeof(dom);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0)
		return false;
	return dom == AF_INET || dom == AF_INET6;
}

/* TCP_NODELAY: records go out as soon as they are queued. The buffer sizes
 * are left to the kernel: setting SO_SNDBUF/SO_RCVBUF turns TCP's
 * autotuning off, and the cap (net.core.wmem_max) is usually far below what
 * autotuning reaches on a fast link. */
static void tune(int fd)
{
	int one = 1;

	if (is_tcp(fd))
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int set_blocking(int fd, bool blocking)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int transport_listen(const struct transport_addr *a, char *err, size_t errlen)
{
	int fd, one = 1, r;

	fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		seterr(err, errlen, "listen on %s: socket: %s", a->text, strerror(-r));
		return r;
	}
	if (a->family != AF_UNIX)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	r = bind(fd, (const struct sockaddr *)&a->sa, a->addrlen);
	if (r == 0)
		r = listen(fd, 16);
	if (r < 0) {
		r = -errno;
		seterr(err, errlen, "listen on %s: %s%s", a->text, strerror(-r),
		       r == -EADDRINUSE && a->family == AF_UNIX
			       ? " (a socket file left behind? remove it)"
			       : "");
		close(fd);
		return r;
	}
	return fd;
}

/* poll() for events within deadline: 1, -EINTR once stop_fd (< 0: none)
 * is readable, -ETIMEDOUT or -errno. */
static int poll_until_or_stop(int fd, short events, int stop_fd, int64_t deadline)
{
	struct pollfd p[2] = { { .fd = fd, .events = events }, { .fd = stop_fd, .events = POLLIN } };
	int r;

	for (;;) {
		r = poll(p, 2, ms_left(deadline));
		if (r > 0)
			return p[1].revents ? -EINTR : 1;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int poll_until(int fd, short events, int64_t deadline)
{
	return poll_until_or_stop(fd, events, -1, deadline);
}

int transport_accept_or_stop(int lfd, int timeout_ms, int stop_fd, char *err, size_t errlen)
{
	int64_t deadline = deadline_of(timeout_ms);
	int fd, r;

	for (;;) {
		r = poll_until_or_stop(lfd, POLLIN, stop_fd, deadline);
		if (r < 0) {
			seterr(err, errlen, "accept: %s",
			       r == -ETIMEDOUT ? "no connection in time" :
			       r == -EINTR ? "stopped by a signal" : strerror(-r));
			return r;
		}
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED) {
			r = -errno;
			seterr(err, errlen, "accept: %s", strerror(-r));
			return r;
		}
	}
	tune(fd);
	return fd;
}

int transport_accept(int lfd, int timeout_ms, char *err, size_t errlen)
{
	return transport_accept_or_stop(lfd, timeout_ms, -1, err, errlen);
}

int transport_connect(const struct transport_addr *a, int timeout_ms, char *err, size_t errlen)
{
	int64_t deadline = deadline_of(timeout_ms);
	int fd, r, soerr = 0;
	socklen_t len = sizeof(soerr);

	if (a->family != AF_UNIX && a->port == 0) {
		seterr(err, errlen, "connect to %s: port 0", a->text);
		return -EINVAL;
	}
	fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		seterr(err, errlen, "connect to %s: socket: %s", a->text, strerror(-r));
		return r;
	}
	tune(fd);
	for (;;) {
		r = connect(fd, (const struct sockaddr *)&a->sa, a->addrlen);
		if (r == 0)
			break;
		if (errno == EINPROGRESS) {
			r = poll_until(fd, POLLOUT, deadline);
			if (r > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
				soerr = errno;
			r = r < 0 ? r : -soerr;
			break;
		}
		if (errno != EAGAIN) { /* unix: the listener's backlog is full */
			r = -errno;
			break;
		}
		if (ms_left(deadline) == 0) {
			r = -ETIMEDOUT;
			break;
		}
		(void)poll(NULL, 0, 5);
	}
	if (r == 0)
		r = set_blocking(fd, true);
	if (r < 0) {
		seterr(err, errlen, "connect to %s: %s", a->text,
		       r == -ETIMEDOUT ? "timed out" : strerror(-r));
		close(fd);
		return r;
	}
	return fd;
}

int transport_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -EAFNOSUPPORT;
}

/* ---- mig_conn: the ring ---- */

static uint64_t ud_pack(enum mig_tag tag, unsigned idx)
{
	return (uint64_t)tag << 56 | idx;
}

/* An SQE; when the SQ is full, submits what is there first. */
static struct io_uring_sqe *get_sqe(struct mig_conn *c)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);

	if (!sqe) {
		(void)io_uring_submit(&c->ring);
		sqe = io_uring_get_sqe(&c->ring);
	}
	return sqe;
}

static int submit(struct mig_conn *c)
{
	int r;

	do
		r = io_uring_submit(&c->ring);
	while (r == -EINTR);
	return r < 0 ? r : 0;
}

static struct mig_send *slot_at(struct mig_conn *c, unsigned k)
{
	return &c->slots[(c->head + k) % c->depth];
}

size_t mig_iov_advance(struct iovec **iov, unsigned *iovcnt, size_t n)
{
	struct iovec *v = *iov;
	unsigned cnt = *iovcnt;
	size_t done = 0;

	while (cnt) {
		if (v->iov_len && done == n)
			break;
		if (v->iov_len > n - done) {
			/* Only the partial entry moves: entries used up whole
			 * keep their values for callers that reuse the array. */
			v->iov_base = (uint8_t *)v->iov_base + (n - done);
			v->iov_len -= n - done;
			done = n;
			break;
		}
		done += v->iov_len;
		v++;
		cnt--;
	}
	*iov = v;
	*iovcnt = cnt;
	return done;
}

/* Points msg at the longest prefix of iov[0, cnt) (iov[0] non-empty) that
 * holds at most MAX_SQE_LEN bytes, or at *part, the first MAX_SQE_LEN bytes
 * of iov[0] when that entry alone is longer: the result is an int. Returns
 * the bytes msg describes. */
static size_t msg_prefix(struct msghdr *msg, struct iovec *iov, unsigned cnt, struct iovec *part)
{
	size_t sum = 0;
	unsigned n = 0;

	memset(msg, 0, sizeof(*msg));
	if (iov[0].iov_len > MAX_SQE_LEN) {
		part->iov_base = iov[0].iov_base;
		part->iov_len = MAX_SQE_LEN;
		msg->msg_iov = part;
		msg->msg_iovlen = 1;
		return MAX_SQE_LEN;
	}
	while (n < cnt && iov[n].iov_len <= MAX_SQE_LEN - sum)
		sum += iov[n++].iov_len;
	msg->msg_iov = iov;
	msg->msg_iovlen = n;
	return sum;
}

/* Prepares the send of what is left of slot s (at most MAX_SQE_LEN bytes)
 * and notes its size in s->sub. */
static void prep_slot(struct mig_conn *c, struct io_uring_sqe *sqe, struct mig_send *s)
{
	size_t left = s->len - s->off;

	if (s->iov) {
		s->sub = msg_prefix(&s->msg, s->iov, s->iovcnt, &s->part);
		io_uring_prep_sendmsg(sqe, c->fd, &s->msg, (unsigned)c->send_flags);
	} else {
		s->sub = left > MAX_SQE_LEN ? MAX_SQE_LEN : left;
		io_uring_prep_send(sqe, c->fd, s->buf + s->off, s->sub, c->send_flags);
	}
}

/* The queued buffers go out as one linked chain, and the next chain only
 * once this one has completed: the kernel runs linked sends in order, but
 * independent sends on one socket can overtake each other. */
static void submit_chain(struct mig_conn *c)
{
	unsigned max, n = 0;
	int r;

	if (c->chain_pending || c->send_error || !c->count)
		return;
	max = (c->send_flags & MSG_WAITALL) ? c->count : 1;
	if (max > io_uring_sq_space_left(&c->ring))
		max = io_uring_sq_space_left(&c->ring);
	while (n < max) {
		struct mig_send *s = slot_at(c, n);
		size_t left = s->len - s->off;
		struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);

		if (!sqe)
			break;
		prep_slot(c, sqe, s);
		s->inflight = true;
		io_uring_sqe_set_data64(sqe, ud_pack(MIG_TAG_SEND, (unsigned)(s - c->slots)));
		n++;
		/* A slot sent in pieces ends the chain: its next piece must
		 * come before the next slot. */
		if (n < max && s->sub == left)
			sqe->flags |= IOSQE_IO_LINK;
		else
			break;
	}
	c->chain_pending = n;
	c->chain_broken = false;
	c->send_sqes += n;
	c->chains++;
	r = submit(c);
	if (r < 0 && !c->send_error)
		c->send_error = r;
}

static void on_send(struct mig_conn *c, unsigned idx, int res)
{
	struct mig_send *s;

	if (idx >= c->depth || !c->slots[idx].inflight)
		return;
	s = &c->slots[idx];
	s->inflight = false;
	c->chain_pending--;
	if (res > 0) {
		/* Bytes after a short send of the same chain: out of order. */
		if (c->chain_broken && !c->send_error)
			c->send_error = -EIO;
		s->off += (size_t)res;
		c->bytes_sent += (uint64_t)res;
		/* The SQE is done with msg: the remainder starts past res. */
		if (s->iov)
			mig_iov_advance(&s->iov, &s->iovcnt, (size_t)res);
		if ((size_t)res < s->sub) {
			c->short_sends++;
			c->chain_broken = true;
		}
	} else if (res == 0) {
		c->short_sends++;
		c->chain_broken = true;
	} else if (res != -ECANCELED && !c->send_error) {
		c->send_error = res; /* -ECANCELED: the chain broke before it */
	}
}

/* Drops the sent slots at the head; after an error, all of them once the
 * kernel is done with them. */
static void pop_sent(struct mig_conn *c)
{
	while (c->count && !slot_at(c, 0)->inflight && slot_at(c, 0)->off == slot_at(c, 0)->len) {
		c->head = (c->head + 1) % c->depth;
		c->count--;
	}
	if (c->send_error && !c->chain_pending) {
		c->head = 0;
		c->count = 0;
	}
}

static void dispatch(struct mig_conn *c, const struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);

	switch ((enum mig_tag)(ud >> 56)) {
	case MIG_TAG_SEND:
		on_send(c, (unsigned)(ud & 0xffffffffu), cqe->res);
		break;
	case MIG_TAG_RECV:
		c->recv_busy = false;
		c->recv_done = true;
		c->recv_res = cqe->res;
		break;
	case MIG_TAG_TIMEOUT:
	case MIG_TAG_CANCEL:
		break;
	}
}

/* Handles every CQE there is, then starts the next chain if one is due. */
static void reap(struct mig_conn *c)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&c->ring, head, cqe) {
		dispatch(c, cqe);
		n++;
	}
	io_uring_cq_advance(&c->ring, n);
	pop_sent(c);
	submit_chain(c);
}

/* Waits for at least one CQE (until deadline; < 0: none) and reaps: 0,
 * -ETIMEDOUT or -errno. */
static int wait_some(struct mig_conn *c, int64_t deadline)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	int64_t left;
	int r;

	for (;;) {
		if (deadline < 0) {
			r = io_uring_wait_cqe(&c->ring, &cqe);
		} else {
			left = deadline - now_ns();
			if (left <= 0)
				return -ETIMEDOUT;
			ts.tv_sec = left / 1000000000ll;
			ts.tv_nsec = left % 1000000000ll;
			r = io_uring_wait_cqe_timeout(&c->ring, &cqe, &ts);
		}
		if (r == -EINTR)
			continue;
		if (r == -ETIME)
			return -ETIMEDOUT;
		if (r < 0)
			return r;
		reap(c);
		return 0;
	}
}

int mig_conn_init(struct mig_conn *c, int fd, unsigned depth)
{
	int r;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (fd < 0 || depth == 0 || depth > MAX_DEPTH)
		return -EINVAL;
	r = set_blocking(fd, true);
	if (r < 0)
		return r;
	c->slots = calloc(depth, sizeof(*c->slots));
	if (!c->slots)
		return -ENOMEM;
	/* Room for a whole chain plus a recv, its timeout and a cancel. */
	r = io_uring_queue_init(depth + 8, &c->ring, 0);
	if (r < 0) {
		free(c->slots);
		c->slots = NULL;
		return r;
	}
	c->ring_ok = true;
	c->fd = fd;
	c->depth = depth;
	c->send_flags = MSG_NOSIGNAL | MSG_WAITALL;
	return 0;
}

void mig_conn_close(struct mig_conn *c)
{
	struct io_uring_sqe *sqe;
	int64_t deadline;

	if (c->ring_ok) {
		if (c->fd >= 0)
			(void)shutdown(c->fd, SHUT_RDWR);
		if (c->chain_pending || c->recv_busy) {
			sqe = get_sqe(c);
			if (sqe) {
				io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
				io_uring_sqe_set_data64(sqe, ud_pack(MIG_TAG_CANCEL, 0));
				(void)submit(c);
			}
		}
		deadline = now_ns() + (int64_t)CLOSE_WAIT_NS;
		if (!c->send_error)
			c->send_error = -ESHUTDOWN; /* no new chains */
		while ((c->chain_pending || c->recv_busy) && wait_some(c, deadline) == 0)
			;
		io_uring_queue_exit(&c->ring);
		c->ring_ok = false;
	}
	free(c->slots);
	c->slots = NULL;
	c->count = 0;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* ---- mig_conn: sending ---- */

/* Queues a slot of len (> 0) bytes: buf, or iov[0, iovcnt) with iov[0]
 * non-empty. Waits for a free slot when all depth are in use. */
static int queue_slot(struct mig_conn *c, const void *buf, struct iovec *iov, unsigned iovcnt,
		      size_t len)
{
	int64_t deadline;
	struct mig_send *s;
	int r;

	if (c->count == c->depth) {
		deadline = deadline_of(SEND_WAIT_MS);
		while (c->count == c->depth && !c->send_error) {
			r = wait_some(c, deadline);
			if (r < 0)
				return r;
		}
		if (c->send_error)
			return c->send_error;
	}
	s = slot_at(c, c->count);
	s->buf = buf;
	s->iov = iov;
	s->iovcnt = iovcnt;
	s->len = len;
	s->off = 0;
	s->sub = 0;
	s->inflight = false;
	c->count++;
	c->bytes_queued += len;
	reap(c); /* completions so far; starts a chain if none is in flight */
	return c->send_error;
}

int mig_conn_send(struct mig_conn *c, const void *buf, size_t len)
{
	if (!c->ring_ok)
		return -EBADF;
	if (c->send_error)
		return c->send_error;
	if (len == 0)
		return 0;
	return queue_slot(c, buf, NULL, 0, len);
}

int mig_conn_sendv(struct mig_conn *c, struct iovec *iov, unsigned iovcnt)
{
	size_t total = 0;

	if (!c->ring_ok)
		return -EBADF;
	if (iovcnt == 0 || iovcnt > IOV_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - total)
			return -EINVAL;
		total += iov[i].iov_len;
	}
	if (c->send_error)
		return c->send_error;
	if (total == 0)
		return 0;
	/* Leading empty entries would make the first SQE ask for nothing. */
	mig_iov_advance(&iov, &iovcnt, 0);
	return queue_slot(c, NULL, iov, iovcnt, total);
}

/* Unlike mig_conn_wait_sent, returns only once the kernel holds none of
 * the buffers, even after a send failed: callers free or reuse them next. */
int mig_conn_flush(struct mig_conn *c, int timeout_ms)
{
	int64_t deadline = deadline_of(timeout_ms);
	int r;

	if (!c->ring_ok)
		return -EBADF;
	for (;;) {
		reap(c);
		if (!c->count)
			return c->send_error;
		r = wait_some(c, deadline);
		if (r < 0)
			return r;
	}
}

int mig_conn_wait_sent(struct mig_conn *c, uint64_t bytes, int timeout_ms)
{
	int64_t deadline = deadline_of(timeout_ms);
	int r;

	if (!c->ring_ok)
		return -EBADF;
	for (;;) {
		reap(c);
		if (c->send_error)
			return c->send_error;
		if (c->bytes_sent >= bytes || !c->count)
			return 0;
		r = wait_some(c, deadline);
		if (r < 0)
			return r;
	}
}

size_t mig_conn_unsent(const struct mig_conn *c)
{
	size_t n = 0;

	for (unsigned k = 0; k < c->count; k++) {
		const struct mig_send *s = &c->slots[(c->head + k) % c->depth];

		n += s->len - s->off;
	}
	return n;
}

int mig_conn_error(const struct mig_conn *c)
{
	return c->send_error ? c->send_error : c->recv_error;
}

/* ---- mig_conn: receiving ---- */

/* Cancels the recv in flight and waits until the kernel has let go of its
 * buffer. */
static void recv_cancel(struct mig_conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(c);

	if (sqe) {
		io_uring_prep_cancel64(sqe, ud_pack(MIG_TAG_RECV, 0), 0);
		io_uring_sqe_set_data64(sqe, ud_pack(MIG_TAG_CANCEL, 0));
		(void)submit(c);
	}
	while (c->recv_busy && wait_some(c, now_ns() + (int64_t)CLOSE_WAIT_NS) == 0)
		;
}

/* One recv into buf[0, len), or (iov != NULL) one recvmsg into
 * iov[0, iovcnt) through c->recv_msg, with the linked timeout. */
static ssize_t recv_one(struct mig_conn *c, void *buf, size_t len, struct iovec *iov,
			unsigned iovcnt, int timeout_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_sqe *sqe;
	int64_t backstop = -1;
	int r;

	if (!c->ring_ok)
		return -EBADF;
	if (c->recv_error)
		return c->recv_error;
	if (c->recv_busy)
		return -EINVAL;
	if (iov) {
		if (iovcnt == 0 || iovcnt > IOV_MAX)
			return -EINVAL;
		/* Only moves the local view past empty entries, so that
		 * msg_prefix starts at room to receive into. */
		mig_iov_advance(&iov, &iovcnt, 0);
		if (!iovcnt)
			return -EINVAL;
		len = msg_prefix(&c->recv_msg, iov, iovcnt, &c->recv_part);
	} else {
		if (len == 0)
			return -EINVAL;
		if (len > MAX_SQE_LEN)
			len = MAX_SQE_LEN;
	}
	if (io_uring_sq_space_left(&c->ring) < 2)
		(void)submit(c);
	/* The recv and its linked timeout must be in one submission. */
	sqe = io_uring_get_sqe(&c->ring);
	if (!sqe)
		return -EBUSY;
	if (iov)
		io_uring_prep_recvmsg(sqe, c->fd, &c->recv_msg, 0);
	else
		io_uring_prep_recv(sqe, c->fd, buf, len, 0);
	io_uring_sqe_set_data64(sqe, ud_pack(MIG_TAG_RECV, 0));
	if (timeout_ms >= 0) {
		sqe->flags |= IOSQE_IO_LINK;
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000ll;
		sqe = io_uring_get_sqe(&c->ring);
		io_uring_prep_link_timeout(sqe, &ts, 0);
		io_uring_sqe_set_data64(sqe, ud_pack(MIG_TAG_TIMEOUT, 0));
		backstop = deadline_of(timeout_ms) + RECV_SLACK_NS;
	}
	c->recv_busy = true;
	c->recv_done = false;
	r = submit(c);
	if (r < 0) {
		recv_cancel(c);
		return r;
	}
	while (!c->recv_done) {
		r = wait_some(c, backstop);
		if (r < 0) { /* the link timeout should have fired: cancel */
			recv_cancel(c);
			if (!c->recv_done)
				return c->recv_error = r == -ETIMEDOUT ? -EIO : r;
		}
	}
	r = c->recv_res;
	if (r > 0) {
		c->bytes_received += (uint64_t)r;
		return r;
	}
	if (r == 0)
		return 0;
	if (r == -ECANCELED || r == -EINTR || r == -ETIME)
		return -ETIMEDOUT;
	c->recv_error = r;
	return r;
}

ssize_t mig_conn_recv(struct mig_conn *c, void *buf, size_t len, int timeout_ms)
{
	return recv_one(c, buf, len, NULL, 0, timeout_ms);
}

ssize_t mig_conn_recvv(struct mig_conn *c, struct iovec *iov, unsigned iovcnt, int timeout_ms)
{
	return recv_one(c, NULL, 0, iov, iovcnt, timeout_ms);
}

int mig_conn_recv_all(struct mig_conn *c, void *buf, size_t len, int timeout_ms)
{
	int64_t deadline = deadline_of(timeout_ms);
	size_t got = 0;
	ssize_t r;

	while (got < len) {
		r = mig_conn_recv(c, (uint8_t *)buf + got, len - got, ms_left(deadline));
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0)
			return c->recv_error = -ECONNRESET;
		if (r == -ETIMEDOUT && got)
			c->recv_error = -ETIMEDOUT; /* the stream position is lost */
		return (int)r;
	}
	return 0;
}
