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

/* A RAW record's pages go from the socket straight into guest memory once
 * its head is here: recv_lane_next() returns the head (data NULL), and
 * recv_load_ram() receives the pages where their ranges say; the record
 * after it decodes as usual. */
static void test_raw_pages_received_in_place(void)
{
	const struct stream_range raw[] = { { 1 * 4096, 10 }, { 20 * 4096, 5 }, { 40 * 4096, 20 } };
	static uint8_t buf[40 * 4096], pages[35 * 4096];
	struct stream_record rec;
	struct fixture f;
	ssize_t n;

	fixture_init(&f);
	for (size_t i = 0; i < sizeof(pages); i++)
		pages[i] = (uint8_t)(i * 7 + i / 4096);
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, 4096, raw, 3, pages, sizeof(pages));
	REQUIRE(n > 0);
	n += stream_encode_iter(buf + n, sizeof(buf) - (size_t)n, 5);
	send_rec(f.peer[0], buf, n);
	REQUIRE(recv_lane_next(&f.lanes[0], &rec, 1000) == STREAM_RAM);
	CHECK(rec.ram.data == NULL);
	CHECK_EQ(rec.ram.data_len, sizeof(pages));
	CHECK_EQ(recv_load_ram(&f.lanes[0], &rec), 0);
	CHECK(f.lanes[0].bytes_direct >= sizeof(pages) - 8192);
	CHECK(memcmp(f.vm.mem.base + 1 * 4096, pages, 10 * 4096) == 0);
	CHECK(memcmp(f.vm.mem.base + 20 * 4096, pages + 10 * 4096, 5 * 4096) == 0);
	CHECK(memcmp(f.vm.mem.base + 40 * 4096, pages + 15 * 4096, 20 * 4096) == 0);
	CHECK_EQ(f.vm.mem.base[0], 0);
	CHECK_EQ(f.vm.mem.base[11 * 4096], 0);
	CHECK_EQ(f.vm.mem.base[60 * 4096], 0);
	CHECK_EQ(recv_missing_pages(&f.rx), 64 - 35);
	REQUIRE(recv_lane_next(&f.lanes[0], &rec, 1000) == STREAM_ITER);
	CHECK_EQ(rec.iteration, 5);
	fixture_free(&f);
}

/* The pages cut short: the lane fails with one line, and the bytes that
 * came are where they belong. */
static void test_raw_pages_cut_short(void)
{
	const struct stream_range raw[] = { { 8 * 4096, 16 } };
	static uint8_t buf[20 * 4096], pages[16 * 4096];
	struct stream_record rec;
	struct fixture f;
	ssize_t n;

	fixture_init(&f);
	memset(pages, 0x3c, sizeof(pages));
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, 4096, raw, 1, pages, sizeof(pages));
	REQUIRE(n > 0);
	send_rec(f.peer[0], buf, n - 3 * 4096);
	shutdown(f.peer[0], SHUT_WR);
	REQUIRE(recv_lane_next(&f.lanes[0], &rec, 1000) == STREAM_RAM);
	CHECK(rec.ram.data == NULL);
	CHECK(recv_load_ram(&f.lanes[0], &rec) < 0);
	CHECK_CONTAINS(f.rx.err, "ended early");
	CHECK_EQ(f.vm.mem.base[8 * 4096], 0x3c);
	CHECK_EQ(f.vm.mem.base[21 * 4096 - 1], 0x3c);
	CHECK_EQ(f.vm.mem.base[23 * 4096], 0);
	fixture_free(&f);
}

/* A head whose range lies outside RAM: refused before a byte of its pages
 * is read; and a caller that never loads a head's pages cannot go on
 * reading the stream from the middle of them. */
static void test_raw_head_checked_first(void)
{
	const struct stream_range out[] = { { 60 * 4096, 8 } };
	const struct stream_range ok[] = { { 0, 4 } };
	static uint8_t buf[20 * 4096], pages[8 * 4096];
	struct stream_record rec;
	struct fixture f;

	fixture_init(&f);
	memset(pages, 0x11, sizeof(pages));
	send_rec(f.peer[0], buf, stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, 4096, out, 1,
						   pages, sizeof(pages)));
	REQUIRE(recv_lane_next(&f.lanes[0], &rec, 1000) == STREAM_RAM);
	CHECK(recv_load_ram(&f.lanes[0], &rec) < 0);
	CHECK_CONTAINS(f.rx.err, "bad RAM record");
	CHECK_EQ(f.vm.mem.base[60 * 4096], 0);
	fixture_free(&f);

	fixture_init(&f);
	send_rec(f.peer[0], buf, stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, 4096, ok, 1,
						   pages, 4 * 4096));
	REQUIRE(recv_lane_next(&f.lanes[0], &rec, 1000) == STREAM_RAM);
	CHECK(rec.ram.data == NULL);
	CHECK(recv_lane_next(&f.lanes[0], &rec, 1000) < 0);
	CHECK_CONTAINS(f.rx.err, "never received");
	fixture_free(&f);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_idle_bound_counts_every_connection);
	RUN(test_idle_bound_when_all_are_silent);
	RUN(test_coverage);
	RUN(test_raw_pages_received_in_place);
	RUN(test_raw_pages_cut_short);
	RUN(test_raw_head_checked_first);
	return unit_done();
}
