/* transport_* and mig_conn_* (migrate/transport.c): the URI parser (pure),
 * then real sockets over loopback: 64 MiB in many buffers of many sizes
 * with many sends in flight and a small send buffer (short sends), checked
 * byte for byte by a receiving thread, over a unix socketpair and TCP;
 * recv_all across sends; EOF; sends to a closed peer (sticky -EPIPE, no
 * SIGPIPE); accept/connect/recv/flush timeouts; unix: URIs. Scatter/gather:
 * mig_iov_advance's edge cases, sendv interleaved with send (short sends
 * re-queued from the advanced iovecs) received with recvv into scattered
 * iovecs, recvv's EOF/timeout, and one slot larger than an SQE carries.
 * `test_transport --bench` also prints loopback throughput. */
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "migrate/transport.h"
#include "tests/unit/unit.h"

#define MIB (1u << 20)
#define ERRLEN 256

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- URIs ---- */

static int parse(const char *uri, struct transport_addr *a, char *err)
{
	err[0] = '\0';
	return transport_parse_uri(uri, a, err, ERRLEN);
}

static void test_parse_ok(void)
{
	struct transport_addr a;
	char err[ERRLEN];
	struct sockaddr_in *in = (struct sockaddr_in *)&a.sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.sa;
	struct sockaddr_un *un = (struct sockaddr_un *)&a.sa;

	CHECK_EQ(parse("tcp:127.0.0.1:4444", &a, err), 0);
	CHECK_EQ(a.family, AF_INET);
	CHECK_EQ(a.port, 4444);
	CHECK_EQ(ntohs(in->sin_port), 4444);
	CHECK_EQ(ntohl(in->sin_addr.s_addr), 0x7f000001u);
	CHECK_EQ(a.addrlen, sizeof(struct sockaddr_in));
	CHECK_STREQ(a.text, "127.0.0.1:4444");

	CHECK_EQ(parse("tcp:0.0.0.0:0", &a, err), 0);
	CHECK_EQ(a.port, 0);
	CHECK_EQ(parse("tcp:10.1.2.3:65535", &a, err), 0);
	CHECK_EQ(a.port, 65535);
	CHECK_EQ(parse("tcp:10.1.2.3:00080", &a, err), 0);
	CHECK_EQ(a.port, 80);

	CHECK_EQ(parse("tcp:localhost:80", &a, err), 0);
	CHECK(a.family == AF_INET || a.family == AF_INET6);
	CHECK_EQ(a.port, 80);

	CHECK_EQ(parse("tcp:[::1]:5", &a, err), 0);
	CHECK_EQ(a.family, AF_INET6);
	CHECK_EQ(ntohs(in6->sin6_port), 5);
	CHECK(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
	CHECK_STREQ(a.text, "[::1]:5");

	CHECK_EQ(parse("tcp:[::]:4444", &a, err), 0);
	CHECK(IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr));
	CHECK_EQ(parse("tcp:[2001:db8::42]:443", &a, err), 0);
	CHECK_STREQ(a.text, "[2001:db8::42]:443");
	CHECK_EQ(parse("tcp:[::ffff:1.2.3.4]:1", &a, err), 0);
	CHECK_EQ(a.family, AF_INET6);

	/* A zone, by name and by number. */
	CHECK_EQ(parse("tcp:[fe80::1%lo]:7", &a, err), 0);
	CHECK_EQ(in6->sin6_scope_id, if_nametoindex("lo"));
	CHECK_CONTAINS(a.text, "%lo]:7");
	CHECK_EQ(parse("tcp:[fe80::1%1]:7", &a, err), 0);
	CHECK_EQ(in6->sin6_scope_id, 1);

	CHECK_EQ(parse("unix:/tmp/vmm-mig.sock", &a, err), 0);
	CHECK_EQ(a.family, AF_UNIX);
	CHECK_STREQ(un->sun_path, "/tmp/vmm-mig.sock");
	CHECK_STREQ(a.text, "unix:/tmp/vmm-mig.sock");
	CHECK_EQ(parse("unix:rel/a:b", &a, err), 0);
	CHECK_STREQ(un->sun_path, "rel/a:b");
	CHECK_STREQ(err, "");
}

static void test_parse_errors(void)
{
	static const struct {
		const char *uri, *want;
	} cases[] = {
		{ "tcp:127.0.0.1", "missing port" },
		{ "tcp:127.0.0.1:", "missing port" },
		{ "tcp:host", "missing port" },
		{ "tcp:", "missing port" },
		{ "tcp:[::1]", "missing port" },
		{ "tcp:[::1]:", "missing port" },
		{ "tcp:1.2.3.4:65536", "port out of range" },
		{ "tcp:1.2.3.4:99999999999999999999999", "port out of range" },
		{ "tcp:[::1]:100000", "port out of range" },
		{ "tcp:1.2.3.4:-1", "bad port" },
		{ "tcp:1.2.3.4:+1", "bad port" },
		{ "tcp:1.2.3.4:80x", "bad port" },
		{ "tcp:1.2.3.4: 80", "bad port" },
		{ "tcp:1.2.3.4:0x50", "bad port" },
		{ "tcp:[::1:80", "bad brackets" },
		{ "tcp:[]:80", "bad brackets" },
		{ "tcp:[::1]80", "bad brackets" },
		{ "tcp:::1]:80", "bad brackets" },
		{ "tcp:[[::1]]:80", "bad brackets" },
		{ "tcp:[::1]:80]", "bad brackets" },
		{ "tcp:[::1]:[80", "bad brackets" },
		{ "tcp:host[1]:80", "bad brackets" },
		{ "tcp:::1:80", "need brackets" },
		{ "tcp:fe80::1%lo:80", "need brackets" },
		{ "tcp::80", "missing host" },
		{ "tcp:[1.2.3.4]:80", "bad IPv6 address" },
		{ "tcp:[fe80::1%nosuchif0]:80", "bad IPv6 address" },
		{ "tcp:[not-v6]:80", "bad IPv6 address" },
		{ "unix:", "empty path" },
		{ "udp:1.2.3.4:5", "unknown scheme" },
		{ "TCP:1.2.3.4:5", "unknown scheme" },
		{ "tcp", "unknown scheme" },
		{ "http://1.2.3.4:5/", "unknown scheme" },
		{ "/tmp/sock", "unknown scheme" },
		{ "", "empty" },
	};
	struct transport_addr a;
	char err[ERRLEN], longuri[300];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ(parse(cases[i].uri, &a, err), -EINVAL);
		CHECK_CONTAINS(err, cases[i].want);
		CHECK_CONTAINS(err, "bad migration URI");
		CHECK(strchr(err, '\n') == NULL);
		if (cases[i].uri[0])
			CHECK_CONTAINS(err, cases[i].uri);
	}
	CHECK_EQ(transport_parse_uri(NULL, &a, err, ERRLEN), -EINVAL);
	CHECK_CONTAINS(err, "empty");

	memcpy(longuri, "unix:/", 6);
	memset(longuri + 6, 'a', 200);
	longuri[206] = '\0';
	CHECK_EQ(parse(longuri, &a, err), -EINVAL);
	CHECK_CONTAINS(err, "path too long");
	longuri[5 + sizeof(((struct sockaddr_un *)0)->sun_path) - 1] = '\0'; /* 107 bytes */
	CHECK_EQ(parse(longuri, &a, err), 0);

	memcpy(longuri, "tcp:", 4);
	memset(longuri + 4, 'h', 280);
	memcpy(longuri + 284, ":80", 4);
	CHECK_EQ(parse(longuri, &a, err), -EINVAL);
	CHECK_CONTAINS(err, "host too long");

	/* A small err buffer is truncated, not overrun; NULL is fine. */
	memset(err, 'z', sizeof(err));
	CHECK_EQ(transport_parse_uri("tcp:x", &a, err, 8), -EINVAL);
	CHECK_EQ(strlen(err), 7);
	CHECK_EQ(err[8], 'z');
	CHECK_EQ(transport_parse_uri("tcp:x", &a, NULL, 0), -EINVAL);
}

/* ---- sockets ---- */

/* A TCP listener on 127.0.0.1 (port 0: the kernel picks) and its address. */
static int tcp_listener(struct transport_addr *to)
{
	struct transport_addr any;
	char err[ERRLEN], uri[64];
	int lfd, port;

	if (parse("tcp:127.0.0.1:0", &any, err))
		return -1;
	lfd = transport_listen(&any, err, ERRLEN);
	if (lfd < 0)
		return lfd;
	port = transport_local_port(lfd);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
	if (port <= 0 || parse(uri, to, err)) {
		close(lfd);
		return -1;
	}
	return lfd;
}

/* A connected TCP pair over loopback: fds[0] connected, fds[1] accepted. */
static int tcp_pair(int fds[2])
{
	struct transport_addr a;
	char err[ERRLEN];
	int lfd = tcp_listener(&a);

	if (lfd < 0)
		return -1;
	fds[0] = transport_connect(&a, 2000, err, ERRLEN);
	fds[1] = fds[0] >= 0 ? transport_accept(lfd, 2000, err, ERRLEN) : -1;
	close(lfd);
	if (fds[0] < 0 || fds[1] < 0) {
		if (fds[0] >= 0)
			close(fds[0]);
		return -1;
	}
	return 0;
}

struct rx {
	int fd;
	const uint8_t *pattern; /* what must arrive; NULL: don't check */
	size_t total;
	size_t got;
	size_t mismatch_at;     /* first wrong byte, or SIZE_MAX */
	int err;
	uint64_t bytes_received;
};

/* Receives rx->total bytes in reads of random sizes through a mig_conn. */
static void *rx_thread(void *arg)
{
	struct rx *rx = arg;
	struct mig_conn c;
	size_t cap = MIB;
	uint8_t *buf = malloc(cap);
	uint64_t r = 0x1234567ull;

	rx->mismatch_at = SIZE_MAX;
	rx->err = buf ? mig_conn_init(&c, rx->fd, 4) : -ENOMEM;
	if (rx->err) {
		free(buf);
		return NULL;
	}
	while (rx->got < rx->total) {
		size_t want;
		ssize_t n;

		r ^= r << 13;
		r ^= r >> 7;
		r ^= r << 17;
		want = rx->pattern ? 1 + r % cap : cap;
		if (want > rx->total - rx->got)
			want = rx->total - rx->got;
		n = mig_conn_recv(&c, buf, want, 5000);
		if (n <= 0) {
			rx->err = n ? (int)n : -ECONNRESET;
			break;
		}
		if (rx->pattern && rx->mismatch_at == SIZE_MAX &&
		    memcmp(buf, rx->pattern + rx->got, (size_t)n) != 0)
			for (ssize_t i = 0; i < n && rx->mismatch_at == SIZE_MAX; i++)
				if (buf[i] != rx->pattern[rx->got + (size_t)i])
					rx->mismatch_at = rx->got + (size_t)i;
		rx->got += (size_t)n;
	}
	rx->bytes_received = c.bytes_received;
	mig_conn_close(&c);
	free(buf);
	return NULL;
}

/* Sends total bytes of pattern in slices of 1 B to 1 MiB with a small
 * send buffer; a thread receives and checks them. */
static void stream_64m(int fds[2], bool waitall, int sndbuf)
{
	const size_t total = 64 * MIB;
	uint8_t *pattern = malloc(total);
	struct rx rx = { .fd = fds[1], .total = total };
	struct mig_conn c;
	pthread_t th;
	size_t off = 0, slices = 0;
	uint64_t t0;

	REQUIRE(pattern);
	for (size_t i = 0; i < total; i += 8) {
		uint64_t v = next_rand();

		memcpy(pattern + i, &v, 8);
	}
	rx.pattern = pattern;
	CHECK_EQ(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	REQUIRE(mig_conn_init(&c, fds[0], 64) == 0);
	if (!waitall)
		c.send_flags &= ~MSG_WAITALL;
	REQUIRE(pthread_create(&th, NULL, rx_thread, &rx) == 0);
	t0 = now_ms();
	while (off < total) {
		uint64_t r = next_rand();
		/* Mostly large slices, some tiny ones. */
		size_t len = (r & 3) == 0 ? 1 + (r >> 8) % 64 : 1 + (r >> 8) % MIB;

		if (len > total - off)
			len = total - off;
		if (mig_conn_send(&c, pattern + off, len) != 0)
			break;
		off += len;
		slices++;
	}
	CHECK_EQ(off, total);
	CHECK_EQ(mig_conn_flush(&c, 5000), 0);
	CHECK_EQ(mig_conn_unsent(&c), 0);
	pthread_join(th, NULL);
	CHECK(now_ms() - t0 < 5000);
	CHECK_EQ(rx.err, 0);
	CHECK_EQ(rx.got, total);
	CHECK_EQ(rx.mismatch_at, SIZE_MAX);
	CHECK_EQ(rx.bytes_received, total);
	CHECK_EQ(c.bytes_sent, total);
	CHECK(c.send_sqes >= slices);
	if (waitall)
		CHECK(c.chains < slices); /* several sends in flight per chain */
	else
		CHECK(c.short_sends > 0);  /* the small send buffer splits sends */
	CHECK_EQ(mig_conn_error(&c), 0);
	mig_conn_close(&c);
	free(pattern);
}

static void test_stream_unix(void)
{
	int fds[2];

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	stream_64m(fds, true, 16384);
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	stream_64m(fds, false, 16384);
}

static void test_stream_tcp(void)
{
	int fds[2];

	REQUIRE(tcp_pair(fds) == 0);
	stream_64m(fds, true, 65536);
	REQUIRE(tcp_pair(fds) == 0);
	stream_64m(fds, false, 65536);
}

/* One thread: the sends progress in the kernel while the same thread waits
 * in recv_all on the other end. */
static void test_recv_all_across_sends(void)
{
	static uint8_t a[100], b[5000], big[MIB], back[MIB + 5100];
	struct mig_conn tx, rx;
	int fds[2];

	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)(i * 7);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i >> 5);
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&tx, fds[0], 8) == 0);
	REQUIRE(mig_conn_init(&rx, fds[1], 8) == 0);
	CHECK_EQ(mig_conn_send(&tx, a, sizeof(a)), 0);
	CHECK_EQ(mig_conn_send(&tx, b, sizeof(b)), 0);
	CHECK_EQ(mig_conn_send(&tx, big, sizeof(big)), 0);
	CHECK_EQ(mig_conn_send(&tx, a, 0), 0); /* nothing to send */
	/* A header's worth, then the rest, spanning all three sends. */
	CHECK_EQ(mig_conn_recv_all(&rx, back, 12, 2000), 0);
	CHECK_EQ(mig_conn_recv_all(&rx, back + 12, sizeof(a) + sizeof(b) + sizeof(big) - 12, 2000),
		 0);
	CHECK(memcmp(back, a, sizeof(a)) == 0);
	CHECK(memcmp(back + sizeof(a), b, sizeof(b)) == 0);
	CHECK(memcmp(back + sizeof(a) + sizeof(b), big, sizeof(big)) == 0);
	CHECK_EQ(mig_conn_flush(&tx, 1000), 0);
	CHECK_EQ(tx.bytes_sent, sizeof(a) + sizeof(b) + sizeof(big));
	CHECK_EQ(rx.bytes_received, tx.bytes_sent);
	/* Nothing more: a bounded wait. */
	CHECK_EQ(mig_conn_recv_all(&rx, back, 1, 50), -ETIMEDOUT);
	CHECK_EQ(mig_conn_error(&rx), 0); /* nothing was consumed */
	CHECK_EQ(mig_conn_recv_all(&rx, back, 0, 50), 0);
	mig_conn_close(&tx);
	mig_conn_close(&rx);
}

static void test_eof(void)
{
	struct mig_conn c;
	uint8_t buf[100];
	int fds[2];

	/* Data, then EOF: recv gives the data, then 0, then 0 again. */
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(write(fds[1], "0123456789", 10), 10);
	close(fds[1]);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 1000), 10);
	CHECK(memcmp(buf, "0123456789", 10) == 0);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 1000), 0);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 1000), 0);
	CHECK_EQ(mig_conn_recv_all(&c, buf, 5, 1000), -ECONNRESET);
	CHECK_EQ(mig_conn_recv_all(&c, buf, 5, 1000), -ECONNRESET); /* sticky */
	CHECK_EQ(mig_conn_recv(&c, buf, 5, 1000), -ECONNRESET);
	CHECK_EQ(mig_conn_error(&c), -ECONNRESET);
	CHECK_EQ(mig_conn_recv(&c, buf, 0, 1000), -ECONNRESET);
	mig_conn_close(&c);

	/* EOF in the middle of recv_all. */
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(write(fds[1], "abc", 3), 3);
	close(fds[1]);
	CHECK_EQ(mig_conn_recv_all(&c, buf, 10, 1000), -ECONNRESET);
	CHECK_EQ(c.bytes_received, 3);
	mig_conn_close(&c);

	/* TCP: the peer closes. */
	REQUIRE(tcp_pair(fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(write(fds[1], "xy", 2), 2);
	close(fds[1]);
	CHECK_EQ(mig_conn_recv_all(&c, buf, 2, 1000), 0);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 1000), 0);
	mig_conn_close(&c);
}

static void test_send_to_closed_peer(void)
{
	static uint8_t chunk[256 << 10];
	struct sigaction dfl = { .sa_handler = SIG_DFL }, old;
	struct mig_conn c;
	uint8_t buf[16];
	int fds[2], r = 0;

	sigaction(SIGPIPE, &dfl, &old); /* a SIGPIPE would kill the test */

	/* Unix: the peer said something and left; our sends fail with a
	 * sticky -EPIPE, yet its last words can still be read. */
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(write(fds[1], "bye", 3), 3);
	close(fds[1]);
	r = mig_conn_send(&c, chunk, sizeof(chunk));
	if (r == 0)
		r = mig_conn_flush(&c, 1000);
	CHECK_EQ(r, -EPIPE);
	CHECK_EQ(mig_conn_send(&c, chunk, 10), -EPIPE);
	CHECK_EQ(mig_conn_flush(&c, 1000), -EPIPE);
	CHECK_EQ(mig_conn_error(&c), -EPIPE);
	CHECK_EQ(mig_conn_unsent(&c), 0);
	CHECK_EQ(mig_conn_recv_all(&c, buf, 3, 1000), 0);
	CHECK(memcmp(buf, "bye", 3) == 0);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 1000), 0);
	mig_conn_close(&c);

	/* TCP: the first sends may land in buffers; the RST makes a later one
	 * fail with -EPIPE or -ECONNRESET, which then sticks. */
	REQUIRE(tcp_pair(fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	close(fds[1]);
	r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = mig_conn_send(&c, chunk, sizeof(chunk));
		if (r == 0)
			r = mig_conn_flush(&c, 1000);
	}
	CHECK(r == -EPIPE || r == -ECONNRESET);
	CHECK_EQ(mig_conn_send(&c, chunk, 1), r);
	CHECK_EQ(mig_conn_flush(&c, 1000), r);
	mig_conn_close(&c);

	sigaction(SIGPIPE, &old, NULL);
}

static void test_timeouts(void)
{
	static uint8_t big[4 * MIB];
	struct transport_addr a;
	struct mig_conn c;
	char err[ERRLEN];
	uint8_t buf[8];
	uint64_t t0, dt;
	int fds[2], lfd, fd, r;

	/* recv: bounded, and the connection is fine afterwards. */
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	t0 = now_ms();
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 100), -ETIMEDOUT);
	dt = now_ms() - t0;
	CHECK(dt >= 90 && dt < 1000);
	t0 = now_ms();
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 0), -ETIMEDOUT);
	CHECK(now_ms() - t0 < 100);
	CHECK_EQ(mig_conn_error(&c), 0);
	CHECK_EQ(write(fds[1], "hi", 2), 2);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), 0), 2); /* data there: no wait */
	CHECK_EQ(write(fds[1], "j", 1), 1);
	CHECK_EQ(mig_conn_recv(&c, buf, sizeof(buf), -1), 1);
	/* recv_all that got part of it: -ETIMEDOUT, and it sticks. */
	CHECK_EQ(write(fds[1], "k", 1), 1);
	CHECK_EQ(mig_conn_recv_all(&c, buf, 2, 100), -ETIMEDOUT);
	CHECK_EQ(mig_conn_recv(&c, buf, 1, 100), -ETIMEDOUT);
	CHECK_EQ(mig_conn_error(&c), -ETIMEDOUT);

	/* flush: the peer never reads; then close returns promptly. */
	CHECK_EQ(mig_conn_send(&c, big, sizeof(big)), 0);
	t0 = now_ms();
	CHECK_EQ(mig_conn_flush(&c, 100), -ETIMEDOUT);
	dt = now_ms() - t0;
	CHECK(dt >= 90 && dt < 1000);
	CHECK(mig_conn_unsent(&c) > 0);
	t0 = now_ms();
	mig_conn_close(&c);
	CHECK(now_ms() - t0 < 1000);
	mig_conn_close(&c); /* twice is harmless */
	close(fds[1]);

	/* accept */
	lfd = tcp_listener(&a);
	REQUIRE(lfd >= 0);
	t0 = now_ms();
	CHECK_EQ(transport_accept(lfd, 200, err, ERRLEN), -ETIMEDOUT);
	dt = now_ms() - t0;
	CHECK(dt >= 190 && dt < 1500);
	CHECK_CONTAINS(err, "accept");
	/* waiting forever, but a readable stop fd (vmm's signalfd) ends it */
	{
		int stop = eventfd(1, EFD_CLOEXEC);

		REQUIRE(stop >= 0);
		t0 = now_ms();
		CHECK_EQ(transport_accept_or_stop(lfd, -1, stop, err, ERRLEN), -EINTR);
		CHECK(now_ms() - t0 < 1000);
		CHECK_CONTAINS(err, "stopped by a signal");
		close(stop);
	}
	/* connect to a listener that never accepts: the kernel completes it */
	fd = transport_connect(&a, 1000, err, ERRLEN);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	close(lfd);
	/* connect to a port nobody listens on */
	t0 = now_ms();
	r = transport_connect(&a, 1000, err, ERRLEN);
	CHECK_EQ(r, -ECONNREFUSED);
	CHECK(now_ms() - t0 < 500);
	CHECK_CONTAINS(err, a.text);
	a.port = 0;
	CHECK_EQ(transport_connect(&a, 100, err, ERRLEN), -EINVAL);
}

/* A listener whose accept queue is full drops SYNs: connect must give up. */
static void test_connect_timeout(void)
{
	struct transport_addr a;
	char err[ERRLEN];
	int lfd = tcp_listener(&a), fds[8], n = 0, r = 0;
	uint64_t t0, dt = 0;

	REQUIRE(lfd >= 0);
	REQUIRE(listen(lfd, 0) == 0);
	while (n < 8) {
		t0 = now_ms();
		r = transport_connect(&a, 200, err, ERRLEN);
		dt = now_ms() - t0;
		if (r < 0)
			break;
		fds[n++] = r;
	}
	CHECK_EQ(r, -ETIMEDOUT);
	CHECK(dt >= 190 && dt < 1500);
	CHECK_CONTAINS(err, "timed out");
	while (n > 0)
		close(fds[--n]);
	close(lfd);
}

static void exchange(int cfd, int sfd)
{
	struct mig_conn a, b;
	uint8_t buf[6];

	REQUIRE(mig_conn_init(&a, cfd, 4) == 0);
	REQUIRE(mig_conn_init(&b, sfd, 4) == 0);
	CHECK_EQ(mig_conn_send(&a, "ping", 4), 0);
	CHECK_EQ(mig_conn_flush(&a, 1000), 0);
	CHECK_EQ(mig_conn_recv_all(&b, buf, 4, 1000), 0);
	CHECK(memcmp(buf, "ping", 4) == 0);
	CHECK_EQ(mig_conn_send(&b, "pong!", 5), 0);
	CHECK_EQ(mig_conn_flush(&b, 1000), 0);
	CHECK_EQ(mig_conn_recv_all(&a, buf, 5, 1000), 0);
	CHECK(memcmp(buf, "pong!", 5) == 0);
	mig_conn_close(&a);
	mig_conn_close(&b);
}

static void test_unix_uri(void)
{
	struct transport_addr a;
	char err[ERRLEN], uri[128];
	int lfd, lfd2, cfd, sfd;

	snprintf(uri, sizeof(uri), "unix:/tmp/vmm-test-transport-%d.sock", (int)getpid());
	REQUIRE(parse(uri, &a, err) == 0);
	unlink(((struct sockaddr_un *)&a.sa)->sun_path);
	CHECK_EQ(transport_connect(&a, 100, err, ERRLEN), -ENOENT);
	lfd = transport_listen(&a, err, ERRLEN);
	REQUIRE(lfd >= 0);
	CHECK_EQ(transport_listen(&a, err, ERRLEN), -EADDRINUSE);
	CHECK_CONTAINS(err, uri);
	CHECK_CONTAINS(err, "remove it");
	cfd = transport_connect(&a, 1000, err, ERRLEN);
	sfd = transport_accept(lfd, 1000, err, ERRLEN);
	REQUIRE(cfd >= 0 && sfd >= 0);
	exchange(cfd, sfd);
	close(lfd);
	/* The file stays behind and is not taken over; once removed, the
	 * path can be listened on again. */
	CHECK_EQ(transport_listen(&a, err, ERRLEN), -EADDRINUSE);
	unlink(((struct sockaddr_un *)&a.sa)->sun_path);
	lfd2 = transport_listen(&a, err, ERRLEN);
	CHECK(lfd2 >= 0);
	if (lfd2 >= 0)
		close(lfd2);
	unlink(((struct sockaddr_un *)&a.sa)->sun_path);
}

static void test_tcp_uri(void)
{
	struct transport_addr a;
	char err[ERRLEN];
	int lfd, cfd, sfd, one = 0;
	socklen_t len = sizeof(one);

	lfd = tcp_listener(&a);
	REQUIRE(lfd >= 0);
	cfd = transport_connect(&a, 1000, err, ERRLEN);
	sfd = transport_accept(lfd, 1000, err, ERRLEN);
	REQUIRE(cfd >= 0 && sfd >= 0);
	CHECK_EQ(getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
	CHECK(one != 0);
	one = 0;
	CHECK_EQ(getsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
	CHECK(one != 0);
	exchange(cfd, sfd);
	close(lfd);

	/* IPv6 loopback, where this machine has it. */
	if (parse("tcp:[::1]:0", &a, err) == 0) {
		lfd = transport_listen(&a, err, ERRLEN);
		if (lfd >= 0) {
			char uri[64];

			snprintf(uri, sizeof(uri), "tcp:[::1]:%d", transport_local_port(lfd));
			REQUIRE(parse(uri, &a, err) == 0);
			cfd = transport_connect(&a, 1000, err, ERRLEN);
			sfd = transport_accept(lfd, 1000, err, ERRLEN);
			CHECK(cfd >= 0 && sfd >= 0);
			if (cfd >= 0 && sfd >= 0)
				exchange(cfd, sfd);
			close(lfd);
		} else {
			printf("note: no IPv6 loopback here (%s)\n", err);
		}
	}
}

static void test_conn_misuse(void)
{
	struct mig_conn c;
	int fds[2];

	CHECK_EQ(mig_conn_init(&c, -1, 4), -EINVAL);
	mig_conn_close(&c);
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	CHECK_EQ(mig_conn_init(&c, fds[0], 0), -EINVAL);
	CHECK_EQ(mig_conn_init(&c, fds[0], 100000), -EINVAL);
	REQUIRE(mig_conn_init(&c, fds[0], 1) == 0);
	/* depth 1: every send waits for the previous one */
	for (int i = 0; i < 100; i++)
		CHECK_EQ(mig_conn_send(&c, "abcdefgh", 8), 0);
	CHECK_EQ(mig_conn_flush(&c, 1000), 0);
	CHECK_EQ(c.bytes_sent, 800);
	CHECK_EQ(mig_conn_flush(&c, 0), 0); /* nothing queued */
	mig_conn_close(&c);
	CHECK_EQ(mig_conn_send(&c, "x", 1), -EBADF);
	CHECK_EQ(mig_conn_flush(&c, 0), -EBADF);
	CHECK_EQ(mig_conn_recv(&c, fds, 1, 0), -EBADF);
	close(fds[1]);
}

/* ---- scatter/gather ---- */

static void test_iov_advance(void)
{
	uint8_t m[64];
	struct iovec v[5], *p;
	unsigned cnt;

#define IOV_RESET()                                                                        \
	do {                                                                               \
		v[0] = (struct iovec){ m, 4 };                                             \
		v[1] = (struct iovec){ m + 10, 0 };                                        \
		v[2] = (struct iovec){ m + 20, 6 };                                        \
		v[3] = (struct iovec){ NULL, 0 };                                          \
		v[4] = (struct iovec){ m + 40, 3 };                                        \
		p = v;                                                                     \
		cnt = 5;                                                                   \
	} while (0)

	/* 0 bytes on a non-empty first entry: nothing moves. */
	IOV_RESET();
	CHECK_EQ(mig_iov_advance(&p, &cnt, 0), 0);
	CHECK(p == v);
	CHECK_EQ(cnt, 5);
	CHECK(v[0].iov_base == m && v[0].iov_len == 4);
	/* 0 bytes from an empty entry: skipped. */
	p = v + 1;
	cnt = 4;
	CHECK_EQ(mig_iov_advance(&p, &cnt, 0), 0);
	CHECK(p == v + 2);
	CHECK_EQ(cnt, 3);

	/* Exactly to an entry boundary: the empty entry after it goes too,
	 * and the used-up entry keeps its values. */
	IOV_RESET();
	CHECK_EQ(mig_iov_advance(&p, &cnt, 4), 4);
	CHECK(p == v + 2);
	CHECK_EQ(cnt, 3);
	CHECK(v[0].iov_base == m && v[0].iov_len == 4);
	CHECK(v[2].iov_base == m + 20 && v[2].iov_len == 6);
	/* Into the middle of an entry, then on from there. */
	CHECK_EQ(mig_iov_advance(&p, &cnt, 2), 2);
	CHECK(p == v + 2);
	CHECK_EQ(cnt, 3);
	CHECK(v[2].iov_base == m + 22 && v[2].iov_len == 4);
	CHECK_EQ(mig_iov_advance(&p, &cnt, 1), 1);
	CHECK(v[2].iov_base == m + 23 && v[2].iov_len == 3);
	CHECK_EQ(mig_iov_advance(&p, &cnt, 4), 4); /* rest of v[2], skips v[3] */
	CHECK(p == v + 4);
	CHECK_EQ(cnt, 1);
	CHECK(v[2].iov_base == m + 23 && v[2].iov_len == 3);
	CHECK(v[4].iov_base == m + 41 && v[4].iov_len == 2);
	/* Exactly to the end. */
	CHECK_EQ(mig_iov_advance(&p, &cnt, 2), 2);
	CHECK(p == v + 5);
	CHECK_EQ(cnt, 0);
	CHECK_EQ(mig_iov_advance(&p, &cnt, 7), 0); /* nothing left */
	CHECK(p == v + 5);

	/* Across several entries at once, ending inside the last. */
	IOV_RESET();
	CHECK_EQ(mig_iov_advance(&p, &cnt, 12), 12);
	CHECK(p == v + 4);
	CHECK_EQ(cnt, 1);
	CHECK(v[2].iov_base == m + 20 && v[2].iov_len == 6);
	CHECK(v[4].iov_base == m + 42 && v[4].iov_len == 1);

	/* Past everything: the total. */
	IOV_RESET();
	CHECK_EQ(mig_iov_advance(&p, &cnt, 100), 13);
	CHECK(p == v + 5);
	CHECK_EQ(cnt, 0);
	CHECK(v[4].iov_base == m + 40 && v[4].iov_len == 3);
	IOV_RESET();
	CHECK_EQ(mig_iov_advance(&p, &cnt, SIZE_MAX), 13);
	CHECK_EQ(cnt, 0);

	/* Only empty entries. */
	v[0] = (struct iovec){ NULL, 0 };
	v[1] = (struct iovec){ m, 0 };
	p = v;
	cnt = 2;
	CHECK_EQ(mig_iov_advance(&p, &cnt, 5), 0);
	CHECK(p == v + 2);
	CHECK_EQ(cnt, 0);
#undef IOV_RESET
}

/* rx_thread, but through mig_conn_recvv the way a receiver fills guest
 * pages: each round picks 1-16 entries (some empty) scattered backwards
 * over a buffer with guard bytes between them, and receives until they are
 * full, advancing the iovecs with mig_iov_advance. */
#define RXV_CAP   (512u << 10)
#define RXV_GUARD 16

static void *rxv_thread(void *arg)
{
	struct rx *rx = arg;
	struct mig_conn c;
	uint8_t *buf = malloc(RXV_CAP);
	struct iovec set[16], orig[16], *iov;
	uint64_t r = 0x9e3779b97f4a7c15ull;

	rx->mismatch_at = SIZE_MAX;
	rx->err = buf ? mig_conn_init(&c, rx->fd, 4) : -ENOMEM;
	if (rx->err) {
		free(buf);
		return NULL;
	}
	while (rx->got < rx->total && !rx->err) {
		size_t want = 0, pos = RXV_CAP, at = rx->got;
		unsigned k, cnt;

		r ^= r << 13;
		r ^= r >> 7;
		r ^= r << 17;
		k = 1 + (unsigned)(r % 16);
		memset(buf, 0xee, RXV_CAP);
		for (unsigned i = 0; i < k; i++) {
			size_t len;

			r ^= r << 13;
			r ^= r >> 7;
			r ^= r << 17;
			switch (r & 7) {
			case 0: len = 0; break;
			case 1: len = 1 + (r >> 8) % 64; break;
			case 2: case 3: len = 4096; break;
			default: len = 1 + (r >> 8) % (RXV_CAP / 16 - RXV_GUARD); break;
			}
			if (len > rx->total - rx->got - want)
				len = rx->total - rx->got - want;
			pos -= len + RXV_GUARD;
			set[i].iov_base = len || (r >> 40) & 1 ? buf + pos : NULL;
			set[i].iov_len = len;
			want += len;
		}
		memcpy(orig, set, sizeof(set));
		iov = set;
		cnt = k;
		if (!want) {
			if (mig_conn_recvv(&c, iov, cnt, 0) != -EINVAL)
				rx->err = -EPROTO;
			continue;
		}
		while (cnt) {
			ssize_t n = mig_conn_recvv(&c, iov, cnt, 5000);

			if (n <= 0) {
				rx->err = n ? (int)n : -ECONNRESET;
				break;
			}
			if (mig_iov_advance(&iov, &cnt, (size_t)n) != (size_t)n)
				rx->err = -EPROTO;
		}
		for (unsigned i = 0; i < k && !rx->err; i++) {
			const uint8_t *b = orig[i].iov_base;

			for (size_t j = 0; j < orig[i].iov_len; j++)
				if (b[j] != rx->pattern[at + j] && rx->mismatch_at == SIZE_MAX)
					rx->mismatch_at = at + j;
			/* Nothing written past the entry. */
			for (size_t j = 0; b && j < RXV_GUARD; j++)
				if (b[orig[i].iov_len + j] != 0xee)
					rx->err = -EFAULT;
			at += orig[i].iov_len;
		}
		rx->got += want;
	}
	rx->bytes_received = c.bytes_received;
	mig_conn_close(&c);
	free(buf);
	return NULL;
}

/* Sends total bytes of pattern, three slots in four through sendv from a
 * scattered copy (entries placed backwards with garbage between them, so
 * sending them from the wrong place or out of order shows), the rest with
 * plain sends, one sendv of IOV_MAX entries among them. The receiver checks
 * byte for byte. Small socket buffers make sends short without
 * MSG_WAITALL. */
static void sendv_stream(int fds[2], bool waitall, int bufsz)
{
	const size_t total = 6 * MIB, pool_len = 8192;
	uint8_t *pattern = malloc(total), *scat = malloc(2 * total);
	struct iovec *pool = calloc(pool_len, sizeof(*pool));
	struct rx rx = { .fd = fds[1], .total = total };
	size_t off = 0, used = 0, slots = 0, empty_entries = 0;
	bool did_max = false;
	struct mig_conn c;
	pthread_t th;
	int r = 0;

	REQUIRE(pattern && scat && pool);
	for (size_t i = 0; i < total; i += 8) {
		uint64_t v = next_rand();

		memcpy(pattern + i, &v, 8);
	}
	memset(scat, 0xee, 2 * total);
	rx.pattern = pattern;
	CHECK_EQ(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz)), 0);
	CHECK_EQ(setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz)), 0);
	REQUIRE(mig_conn_init(&c, fds[0], 16) == 0);
	if (!waitall)
		c.send_flags &= ~MSG_WAITALL;
	REQUIRE(pthread_create(&th, NULL, rxv_thread, &rx) == 0);
	while (off < total && r == 0) {
		uint64_t rnd = next_rand();
		unsigned k = 1 + (unsigned)((rnd >> 2) % 16);
		size_t sum = 0, cursor;
		uint8_t *region;
		struct iovec *iov;

		if ((rnd & 3) == 0) {
			size_t len = 1 + (rnd >> 8) % (128u << 10);

			if (len > total - off)
				len = total - off;
			r = mig_conn_send(&c, pattern + off, len);
			off += len;
			slots++;
			continue;
		}
		if (!did_max && off > total / 4) {
			k = IOV_MAX;
			did_max = true;
		}
		if (used + k > pool_len) {
			/* Every queued array must stay put until it is sent. */
			r = mig_conn_flush(&c, 5000);
			used = 0;
		}
		iov = pool + used;
		used += k;
		for (unsigned i = 0; i < k; i++) {
			uint64_t q = next_rand();
			size_t len;

			if (k == IOV_MAX)
				len = q % 100; /* some 0 */
			else if ((q & 7) == 0)
				len = 0;
			else if ((q & 7) == 1)
				len = 1 + (q >> 8) % 64;
			else if ((q & 7) < 4)
				len = 4096;
			else
				len = 1 + (q >> 8) % (64u << 10);
			if (len > total - off - sum)
				len = total - off - sum;
			iov[i].iov_len = len;
			iov[i].iov_base = (q >> 40) & 1 ? NULL : pattern; /* placed below */
			sum += len;
		}
		/* This slot's bytes are pattern[off, off + sum); its room in scat
		 * is [2 off, 2 (off + sum)): each entry, last first, followed by
		 * as many garbage bytes. */
		region = scat + 2 * off;
		cursor = 2 * sum;
		for (unsigned i = 0, pre = 0; i < k; pre += (unsigned)iov[i].iov_len, i++) {
			if (!iov[i].iov_len) {
				empty_entries++;
				continue;
			}
			cursor -= 2 * iov[i].iov_len;
			iov[i].iov_base = region + cursor;
			memcpy(region + cursor, pattern + off + pre, iov[i].iov_len);
		}
		if (sum == 0) {
			uint64_t q0 = c.bytes_queued, sqes = c.send_sqes;

			r = mig_conn_sendv(&c, iov, k);
			CHECK_EQ(c.bytes_queued, q0);
			CHECK_EQ(c.send_sqes, sqes);
			continue;
		}
		r = mig_conn_sendv(&c, iov, k);
		off += sum;
		slots++;
		CHECK(mig_conn_unsent(&c) <= c.bytes_queued - c.bytes_sent);
		CHECK_EQ(mig_conn_unsent(&c), c.bytes_queued - c.bytes_sent);
	}
	CHECK_EQ(r, 0);
	CHECK_EQ(off, total);
	CHECK(did_max);
	CHECK(empty_entries > 0);
	CHECK_EQ(mig_conn_flush(&c, 5000), 0);
	CHECK_EQ(mig_conn_unsent(&c), 0);
	pthread_join(th, NULL);
	CHECK_EQ(rx.err, 0);
	CHECK_EQ(rx.got, total);
	CHECK_EQ(rx.mismatch_at, SIZE_MAX);
	CHECK_EQ(rx.bytes_received, total);
	CHECK_EQ(c.bytes_queued, total);
	CHECK_EQ(c.bytes_sent, total);
	CHECK(c.send_sqes >= slots);
	if (waitall)
		CHECK(c.chains < slots);
	else
		CHECK(c.short_sends > 0);
	CHECK_EQ(mig_conn_error(&c), 0);
	printf("note: sendv %s: %zu slots, %llu SQEs, %llu chains, %llu short sends\n",
	       waitall ? "waitall" : "no waitall", slots, (unsigned long long)c.send_sqes,
	       (unsigned long long)c.chains, (unsigned long long)c.short_sends);
	mig_conn_close(&c);
	free(pool);
	free(scat);
	free(pattern);
}

static void test_sendv_stream_unix(void)
{
	int fds[2];

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	sendv_stream(fds, true, 16384);
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	sendv_stream(fds, false, 16384);
}

static void test_sendv_stream_tcp(void)
{
	int fds[2];

	REQUIRE(tcp_pair(fds) == 0);
	sendv_stream(fds, true, 65536);
	REQUIRE(tcp_pair(fds) == 0);
	sendv_stream(fds, false, 65536);
}

static void test_sendv_args(void)
{
	static struct iovec v[IOV_MAX + 1];
	static uint8_t a[3 * MIB], b[100], d[MIB], expect[3 * MIB + 100 + MIB + 5];
	struct rx rx = { .total = sizeof(expect), .pattern = expect };
	struct mig_conn c;
	pthread_t th;
	int fds[2];

	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)(i * 13 + (i >> 12));
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)~i;
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i >> 3);
	memcpy(expect, a, sizeof(a));
	memcpy(expect + sizeof(a), b, sizeof(b));
	memcpy(expect + sizeof(a) + sizeof(b), "hello", 5);
	memcpy(expect + sizeof(a) + sizeof(b) + 5, d, sizeof(d));

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(mig_conn_sendv(&c, v, 0), -EINVAL);
	CHECK_EQ(mig_conn_sendv(&c, v, IOV_MAX + 1), -EINVAL);
	v[0] = (struct iovec){ a, SIZE_MAX };
	v[1] = (struct iovec){ b, 2 };
	CHECK_EQ(mig_conn_sendv(&c, v, 2), -EINVAL); /* the total overflows */
	/* Nothing to send: nothing queued. */
	v[0] = (struct iovec){ NULL, 0 };
	v[1] = (struct iovec){ a, 0 };
	CHECK_EQ(mig_conn_sendv(&c, v, 2), 0);
	CHECK_EQ(c.bytes_queued, 0);
	CHECK_EQ(c.count, 0);
	CHECK_EQ(c.send_sqes, 0);
	CHECK_EQ(mig_conn_error(&c), 0);

	/* Nobody reads yet: what is queued shows up as unsent, iov slots and
	 * plain ones alike. */
	v[0] = (struct iovec){ NULL, 0 };
	v[1] = (struct iovec){ a, sizeof(a) };
	v[2] = (struct iovec){ b, sizeof(b) };
	v[3] = (struct iovec){ b, 0 };
	v[4] = (struct iovec){ d, sizeof(d) };
	CHECK_EQ(mig_conn_sendv(&c, v, 3), 0);
	CHECK_EQ(mig_conn_send(&c, "hello", 5), 0);
	CHECK_EQ(mig_conn_sendv(&c, v + 3, 2), 0);
	CHECK_EQ(c.bytes_queued, sizeof(expect));
	CHECK_EQ(mig_conn_flush(&c, 50), -ETIMEDOUT);
	CHECK(mig_conn_unsent(&c) > 0);
	CHECK_EQ(mig_conn_unsent(&c), c.bytes_queued - c.bytes_sent);
	CHECK(c.count >= 1);
	/* Now drain it, checking every byte. */
	rx.fd = fds[1];
	REQUIRE(pthread_create(&th, NULL, rx_thread, &rx) == 0);
	CHECK_EQ(mig_conn_flush(&c, 5000), 0);
	pthread_join(th, NULL);
	CHECK_EQ(rx.err, 0);
	CHECK_EQ(rx.got, sizeof(expect));
	CHECK_EQ(rx.mismatch_at, SIZE_MAX);
	CHECK_EQ(mig_conn_unsent(&c), 0);
	CHECK_EQ(c.bytes_sent, sizeof(expect));
	mig_conn_close(&c);
	CHECK_EQ(mig_conn_sendv(&c, v + 1, 1), -EBADF);
	CHECK_EQ(mig_conn_recvv(&c, v + 1, 1, 0), -EBADF);
}

static void test_recvv(void)
{
	uint8_t a[5], b[7], d[20], big[32];
	struct iovec v[4], keep[4], *p;
	struct mig_conn c;
	unsigned cnt;
	uint64_t t0, dt;
	int fds[2];

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	memset(a, 0xee, sizeof(a));
	memset(b, 0xee, sizeof(b));
	memset(d, 0xee, sizeof(d));
	v[0] = (struct iovec){ a, sizeof(a) };
	v[1] = (struct iovec){ NULL, 0 };
	v[2] = (struct iovec){ b, sizeof(b) };
	v[3] = (struct iovec){ d, sizeof(d) };
	memcpy(keep, v, sizeof(v));

	/* Less than there is room for: the entries fill in order. */
	CHECK_EQ(write(fds[1], "0123456789AB", 12), 12);
	CHECK_EQ(mig_conn_recvv(&c, v, 4, 1000), 12);
	CHECK(memcmp(a, "01234", 5) == 0);
	CHECK(memcmp(b, "56789AB", 7) == 0);
	CHECK_EQ(d[0], 0xee);
	CHECK(memcmp(v, keep, sizeof(v)) == 0); /* the array is not advanced */

	/* A fixed amount in pieces, the caller advancing the array. */
	CHECK_EQ(write(fds[1], "abcdefghi", 9), 9);
	p = v;
	cnt = 4;
	CHECK_EQ(mig_conn_recvv(&c, p, cnt, 1000), 9);
	CHECK_EQ(mig_iov_advance(&p, &cnt, 9), 9);
	CHECK(p == v + 2);
	CHECK_EQ(cnt, 2);
	CHECK_EQ(write(fds[1], "jklmnopqrstuvwxyz0123", 21), 21);
	CHECK_EQ(mig_conn_recvv(&c, p, cnt, 1000), 21);
	CHECK_EQ(mig_iov_advance(&p, &cnt, 21), 21);
	CHECK(p == v + 3);
	CHECK_EQ(cnt, 1);
	CHECK(memcmp(a, "abcde", 5) == 0);
	CHECK(memcmp(b, "fghijkl", 7) == 0);
	CHECK(memcmp(d, "mnopqrstuvwxyz0123", 18) == 0);
	CHECK_EQ(d[18], 0xee);
	CHECK_EQ(d[19], 0xee);
	CHECK_EQ(c.bytes_received, 42);

	/* Silence: bounded, and the connection is fine afterwards. */
	memcpy(v, keep, sizeof(v));
	t0 = now_ms();
	CHECK_EQ(mig_conn_recvv(&c, v, 4, 100), -ETIMEDOUT);
	dt = now_ms() - t0;
	CHECK(dt >= 90 && dt < 1000);
	CHECK_EQ(mig_conn_recvv(&c, v, 4, 0), -ETIMEDOUT);
	CHECK_EQ(mig_conn_error(&c), 0);
	CHECK_EQ(write(fds[1], "XYZ", 3), 3);
	CHECK_EQ(mig_conn_recvv(&c, v + 1, 3, 1000), 3); /* from the empty entry on */
	CHECK(memcmp(b, "XYZijkl", 7) == 0);
	CHECK(memcmp(a, "abcde", 5) == 0);
	/* Mixed with plain recvs on the same stream. */
	CHECK_EQ(write(fds[1], "1234567", 7), 7);
	CHECK_EQ(mig_conn_recv(&c, big, 3, 1000), 3);
	CHECK_EQ(mig_conn_recvv(&c, v, 1, 1000), 4);
	CHECK(memcmp(big, "123", 3) == 0);
	CHECK(memcmp(a, "4567e", 5) == 0);

	/* No room at all. */
	CHECK_EQ(mig_conn_recvv(&c, v, 0, 0), -EINVAL);
	CHECK_EQ(mig_conn_recvv(&c, v, IOV_MAX + 1, 0), -EINVAL);
	CHECK_EQ(mig_conn_recvv(&c, v + 1, 1, 0), -EINVAL);
	CHECK_EQ(mig_conn_error(&c), 0);

	/* Data then EOF: the data, then 0 for good. */
	CHECK_EQ(write(fds[1], "last", 4), 4);
	close(fds[1]);
	CHECK_EQ(mig_conn_recvv(&c, v, 4, 1000), 4);
	CHECK(memcmp(a, "last", 4) == 0);
	CHECK_EQ(mig_conn_recvv(&c, v, 4, 1000), 0);
	CHECK_EQ(mig_conn_recvv(&c, v, 4, -1), 0);
	CHECK_EQ(mig_conn_error(&c), 0);
	mig_conn_close(&c);

	/* TCP, EOF after data. */
	REQUIRE(tcp_pair(fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(write(fds[1], "tcp-data", 8), 8);
	close(fds[1]);
	memcpy(v, keep, sizeof(v));
	CHECK_EQ(mig_conn_recvv(&c, v + 2, 2, 1000), 8);
	CHECK(memcmp(b, "tcp-dat", 7) == 0);
	CHECK_EQ(d[0], 'a');
	CHECK_EQ(mig_conn_recvv(&c, v + 2, 2, 1000), 0);
	mig_conn_close(&c);
}

/* Reads and checks the huge slot: zeros except for the marks. */
struct huge_rx {
	int fd;
	size_t total, big_len;
	const size_t *marks;
	unsigned nmarks;
	const uint8_t *tail;
	size_t bad_at;
	int err;
};

static void *huge_rx_thread(void *arg)
{
	struct huge_rx *h = arg;
	struct mig_conn c;
	uint8_t *buf = malloc(MIB);
	size_t got = 0;

	h->bad_at = SIZE_MAX;
	h->err = buf ? mig_conn_init(&c, h->fd, 4) : -ENOMEM;
	if (h->err) {
		free(buf);
		return NULL;
	}
	while (got < h->total) {
		static const uint8_t zero[4096];
		ssize_t n = mig_conn_recv(&c, buf, MIB, 10000);

		if (n <= 0) {
			h->err = n ? (int)n : -ECONNRESET;
			break;
		}
		/* Checks the marks and the tail and zeroes them, so that
		 * all of it must then be zero. */
		for (unsigned m = 0; m < h->nmarks; m++) {
			if (h->marks[m] < got || h->marks[m] >= got + (size_t)n)
				continue;
			if (buf[h->marks[m] - got] != (uint8_t)(0xa0 + m) && h->bad_at == SIZE_MAX)
				h->bad_at = h->marks[m];
			buf[h->marks[m] - got] = 0;
		}
		for (size_t i = 0; i < (size_t)n; i++) {
			if (got + i < h->big_len)
				continue;
			if (buf[i] != h->tail[got + i - h->big_len] && h->bad_at == SIZE_MAX)
				h->bad_at = got + i;
			buf[i] = 0;
		}
		for (size_t i = 0; i < (size_t)n; i += sizeof(zero)) {
			size_t len = (size_t)n - i < sizeof(zero) ? (size_t)n - i : sizeof(zero);

			if (memcmp(buf + i, zero, len) && h->bad_at == SIZE_MAX)
				h->bad_at = got + i;
		}
		got += (size_t)n;
	}
	mig_conn_close(&c);
	free(buf);
	return NULL;
}

/* One slot longer than an SQE may carry (a CQE's res is an int; the
 * transport asks for at most 1 GiB at a time), from untouched anonymous
 * memory so that it costs no RAM. */
static void test_sendv_huge(void)
{
	const size_t big_len = (1u << 30) + 8192, gib = 1u << 30;
	const size_t marks[] = { 0, gib - 1, gib, gib + 1, big_len - 1 };
	static uint8_t tail[100];
	struct huge_rx h = { .big_len = big_len, .marks = marks, .tail = tail,
			     .nmarks = sizeof(marks) / sizeof(marks[0]) };
	struct iovec v[3];
	struct mig_conn c;
	pthread_t th;
	uint8_t *big;
	int fds[2];

	big = mmap(NULL, big_len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	REQUIRE(big != MAP_FAILED);
	for (unsigned m = 0; m < h.nmarks; m++)
		big[marks[m]] = (uint8_t)(0xa0 + m);
	for (size_t i = 0; i < sizeof(tail); i++)
		tail[i] = (uint8_t)(i + 1);
	h.total = big_len + sizeof(tail);

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	h.fd = fds[1];
	REQUIRE(pthread_create(&th, NULL, huge_rx_thread, &h) == 0);
	v[0] = (struct iovec){ NULL, 0 };
	v[1] = (struct iovec){ big, big_len };
	v[2] = (struct iovec){ tail, sizeof(tail) };
	CHECK_EQ(mig_conn_sendv(&c, v, 3), 0);
	CHECK_EQ(mig_conn_flush(&c, 20000), 0);
	pthread_join(th, NULL);
	CHECK_EQ(h.err, 0);
	CHECK_EQ(h.bad_at, SIZE_MAX);
	CHECK_EQ(c.bytes_sent, h.total);
	CHECK_EQ(c.send_sqes, 2); /* 1 GiB, then the 8 KiB left and the tail */
	CHECK_EQ(c.short_sends, 0);
	/* The entry sent in two pieces was advanced in place. */
	CHECK(v[1].iov_base == big + gib && v[1].iov_len == 8192);
	CHECK(v[2].iov_base == tail && v[2].iov_len == sizeof(tail));
	mig_conn_close(&c);

	/* recvv into an entry longer than 1 GiB. */
	v[1] = (struct iovec){ big, big_len };
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	REQUIRE(mig_conn_init(&c, fds[0], 4) == 0);
	CHECK_EQ(write(fds[1], "into-big", 8), 8);
	CHECK_EQ(mig_conn_recvv(&c, v, 3, 1000), 8);
	CHECK(memcmp(big, "into-big", 8) == 0);
	CHECK_EQ(big[8], 0);
	mig_conn_close(&c);
	close(fds[1]);
	munmap(big, big_len);
}

/* ---- --bench ---- */

static void bench_one(const char *what, int fds[2], size_t bufsz, unsigned depth)
{
	const size_t total = 2048 * MIB;
	uint8_t *buf = malloc(bufsz * 4);
	struct rx rx = { .fd = fds[1], .total = total };
	struct mig_conn c;
	struct timespec t0, t1;
	pthread_t th;
	double s;

	if (!buf || mig_conn_init(&c, fds[0], depth))
		return;
	memset(buf, 0x5a, bufsz * 4);
	pthread_create(&th, NULL, rx_thread, &rx);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t off = 0, i = 0; off < total; off += bufsz, i++)
		if (mig_conn_send(&c, buf + (i % 4) * bufsz, bufsz))
			break;
	mig_conn_flush(&c, -1);
	pthread_join(th, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("bench: %-4s %4zu KiB buffers, depth %2u: %.0f MB/s (%llu chains, %llu SQEs, rx %s)\n",
	       what, bufsz >> 10, depth, (double)total / s / 1e6, (unsigned long long)c.chains,
	       (unsigned long long)c.send_sqes, rx.err ? strerror(-rx.err) : "ok");
	mig_conn_close(&c);
	free(buf);
}

static void bench_plain(int fds[2], size_t bufsz)
{
	const size_t total = 2048 * MIB;
	uint8_t *buf = malloc(bufsz);
	struct rx rx = { .fd = fds[1], .total = total };
	struct timespec t0, t1;
	pthread_t th;
	double s;

	if (!buf)
		return;
	memset(buf, 0x5a, bufsz);
	pthread_create(&th, NULL, rx_thread, &rx);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t off = 0; off < total;) {
		ssize_t n = send(fds[0], buf, bufsz, MSG_NOSIGNAL);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	pthread_join(th, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("bench: tcp  %4zu KiB buffers, plain send(2): %.0f MB/s\n", bufsz >> 10,
	       (double)total / s / 1e6);
	close(fds[0]);
	free(buf);
}

static void bench(void)
{
	int fds[2];

	if (tcp_pair(fds) == 0)
		bench_plain(fds, MIB);
	if (tcp_pair(fds) == 0)
		bench_one("tcp", fds, MIB, 64);
	if (tcp_pair(fds) == 0)
		bench_one("tcp", fds, MIB, 1);
	if (tcp_pair(fds) == 0)
		bench_one("tcp", fds, 64 << 10, 64);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0)
		bench_one("unix", fds, MIB, 64);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_parse_ok);
	RUN(test_parse_errors);
	RUN(test_stream_unix);
	RUN(test_stream_tcp);
	RUN(test_recv_all_across_sends);
	RUN(test_eof);
	RUN(test_send_to_closed_peer);
	RUN(test_timeouts);
	RUN(test_connect_timeout);
	RUN(test_unix_uri);
	RUN(test_tcp_uri);
	RUN(test_conn_misuse);
	RUN(test_iov_advance);
	RUN(test_sendv_args);
	RUN(test_recvv);
	RUN(test_sendv_stream_unix);
	RUN(test_sendv_stream_tcp);
	RUN(test_sendv_huge);
	if (argc > 1 && !strcmp(argv[1], "--bench"))
		bench();
	return unit_done();
}
