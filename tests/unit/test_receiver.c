/* The destination's receiving lanes without KVM: records over socketpairs
 * into a guest memory of a few pages (migrate/receiver.c). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/receiver.h"
#include "migrate/stream.h"
#include "unit.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define RAM (64 * 4096)

struct fixture {
	struct vm vm;
	struct recv_shared rx;
	struct recv_lane lanes[2];
	int peer[2]; /* the source's ends */
};

static void fixture_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	REQUIRE(guest_mem_alloc(&f->vm.mem, RAM) == 0);
	REQUIRE(recv_shared_init(&f->rx, &f->vm) == 0);
	f->rx.nlanes = 2;
	for (unsigned i = 0; i < 2; i++) {
		int sv[2];

		REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
		REQUIRE(recv_lane_init(&f->rx, &f->lanes[i], i, sv[0]) == 0);
		f->peer[i] = sv[1];
	}
}

static void fixture_free(struct fixture *f)
{
	for (unsigned i = 0; i < 2; i++) {
		recv_lane_free(&f->lanes[i]);
		close(f->peer[i]);
	}
	recv_shared_free(&f->rx);
	guest_mem_free(&f->vm.mem);
}

static void send_rec(int fd, const uint8_t *buf, ssize_t n)
{
	REQUIRE(n > 0);
	REQUIRE(write_all(fd, buf, (size_t)n) == 0);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

struct reader {
	struct recv_lane *l;
	int timeout_ms;
	int rc;           /* the type of the first record, or the error */
	uint64_t took_ms;
};

static void *read_one(void *arg)
{
	struct reader *r = arg;
	struct stream_record rec;
	uint64_t t0 = now_ns();

	r->rc = recv_lane_next(r->l, &rec, r->timeout_ms);
	r->took_ms = (now_ns() - t0) / 1000000;
	return NULL;
}

/* A connection whose share of a pass is done stays silent while another
 * one still sends: its idle bound must count the other's bytes, or a slow
 * link among several fails the migration (it did: each connection gave up
 * after its own 60 s of silence). */
static void test_idle_bound_counts_every_connection(void)
{
	struct fixture f;
	struct reader quiet;
	pthread_t t;
	uint8_t buf[64];

	fixture_init(&f);
	quiet = (struct reader){ .l = &f.lanes[1], .timeout_ms = 600 };
	REQUIRE(pthread_create(&t, NULL, read_one, &quiet) == 0);
	/* Connection 0 brings a record every 100 ms for 1.5 s, which the
	 * coordinator reads; connection 1 says nothing until then. */
	for (unsigned i = 0; i < 15; i++) {
		struct stream_record rec;

		send_rec(f.peer[0], buf, stream_encode_iter(buf, sizeof(buf), i));
		CHECK_EQ(recv_lane_next(&f.lanes[0], &rec, 600), STREAM_ITER);
		sleep_ms(100);
	}
	send_rec(f.peer[1], buf, stream_encode_sync(buf, sizeof(buf)));
	pthread_join(t, NULL);
	CHECK_EQ(quiet.rc, STREAM_SYNC);
	CHECK(quiet.took_ms >= 1400);
	fixture_free(&f);
}

/* When no connection brings anything for the bound, a waiting lane gives up
 * with one line. */
static void test_idle_bound_when_all_are_silent(void)
{
	struct fixture f;
	struct reader r;

	fixture_init(&f);
	r = (struct reader){ .l = &f.lanes[1], .timeout_ms = 300 };
	read_one(&r);
	CHECK_EQ(r.rc, -ETIMEDOUT);
	CHECK(r.took_ms >= 290 && r.took_ms < 3000);
	CHECK_CONTAINS(f.rx.err, "connection 1: nothing from the source for 0.3 s");
	fixture_free(&f);
}

/* Every RAM record accounts for its pages, SKIP included: what is not
 * accounted for is missing. */
static void test_coverage(void)
{
	const struct stream_range skip[] = { { 0, 16 }, { 32 * 4096, 30 } };
	const struct stream_range zero[] = { { 16 * 4096, 16 } };
	const struct stream_range raw[] = { { 62 * 4096, 1 } };
	static uint8_t buf[16384], page[4096];
	struct stream_record rec;
	struct fixture f;

	fixture_init(&f);
	CHECK_EQ(recv_missing_pages(&f.rx), 64);
	send_rec(f.peer[0], buf,
		 stream_encode_ram(buf, sizeof(buf), STREAM_RAM_SKIP, 4096, skip, 2, NULL, 0));
	send_rec(f.peer[0], buf,
		 stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, 4096, zero, 1, NULL, 0));
	memset(page, 0xab, sizeof(page));
	send_rec(f.peer[0], buf,
		 stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, 4096, raw, 1, page, 4096));
	for (unsigned i = 0; i < 3; i++) {
		REQUIRE(recv_lane_next(&f.lanes[0], &rec, 1000) == STREAM_RAM);
		CHECK_EQ(recv_load_ram(&f.lanes[0], &rec), 0);
	}
	CHECK_EQ(recv_missing_pages(&f.rx), 1); /* page 63 */
	CHECK_EQ(f.vm.mem.base[62 * 4096 + 7], 0xab);
	CHECK_EQ(f.vm.mem.base[0], 0); /* SKIP wrote nothing */
	fixture_free(&f);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_idle_bound_counts_every_connection);
	RUN(test_idle_bound_when_all_are_silent);
	RUN(test_coverage);
	return unit_done();
}
