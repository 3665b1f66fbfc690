/* tcp_delivery_rate (migrate/tcp_rate.c): not TCP is -ENOTSUP (the lane
 * then times its socket); over TCP loopback, a sender that keeps the
 * socket full gets a rate sample from the kernel, and a plausible one. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/tcp_rate.h"
#include "tests/unit/unit.h"

static void test_not_tcp(void)
{
	int sv[2];
	double bps = -1;

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CHECK_EQ(tcp_delivery_rate(sv[0], &bps), -ENOTSUP);
	CHECK(bps == -1);
	close(sv[0]);
	close(sv[1]);
	CHECK_EQ(tcp_delivery_rate(-1, &bps), -EBADF);
}

static void *drain(void *arg)
{
	int fd = *(int *)arg;
	char buf[65536];

	/* Slower than the sender, so that the sender's socket fills. */
	while (read(fd, buf, sizeof(buf)) > 0)
		usleep(200);
	return NULL;
}

static void test_tcp_loopback(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0), s, got = 0;
	static char chunk[1 << 20];
	pthread_t t;
	double bps = 0;

	REQUIRE(l >= 0 && c >= 0);
	REQUIRE(bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 1) == 0);
	REQUIRE(getsockname(l, (struct sockaddr *)&a, &alen) == 0);
	REQUIRE(connect(c, (struct sockaddr *)&a, sizeof(a)) == 0);
	REQUIRE((s = accept(l, NULL, NULL)) >= 0);
	/* Nothing sent yet: no sample. */
	CHECK_EQ(tcp_delivery_rate(c, &bps), -EAGAIN);
	REQUIRE(pthread_create(&t, NULL, drain, &s) == 0);
	for (int i = 0; i < 64 && !got; i++) {
		REQUIRE(write(c, chunk, sizeof(chunk)) == (ssize_t)sizeof(chunk));
		int rc = tcp_delivery_rate(c, &bps);

		CHECK(rc == 0 || rc == -EAGAIN);
		got = rc == 0;
	}
	CHECK(got);
	CHECK(bps > 1e6); /* loopback: far above 1 MB/s */
	shutdown(c, SHUT_RDWR);
	close(c);
	pthread_join(t, NULL);
	close(s);
	close(l);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_not_tcp);
	RUN(test_tcp_loopback);
	return unit_done();
}
