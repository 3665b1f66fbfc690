/* zpool_*: compression workers (migrate/compress_pool.c). Batches of
 * scattered pages come back as frames that decode to the pages in order,
 * whatever order the jobs finish and are waited for in; two submitters
 * share one pool; a batch that does not shrink comes back -ENOSPC; bad
 * thread counts are refused; a pool with nothing to do stops cleanly. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/compress_pool.h"
#include "migrate/ram.h"
#include "tests/unit/unit.h"

#define PAGE 4096u
#define AREA_PAGES 1024u
#define JOBS 24u

static uint8_t *area; /* the "guest memory" the pages come from */

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Pages that compress: each page a few words repeated, the word its index. */
static void fill_area(void)
{
	area = ram_buf_alloc((size_t)AREA_PAGES * PAGE);
	REQUIRE(area);
	for (unsigned p = 0; p < AREA_PAGES; p++)
		for (unsigned w = 0; w < PAGE / 8; w++) {
			uint64_t v = (uint64_t)p * 0x10001 + (w % 4);

			memcpy(area + (size_t)p * PAGE + w * 8, &v, 8);
		}
}

struct batch {
	struct zjob z;
	unsigned page[ZPOOL_MAX_PAGES];
	uint8_t *dst;
	size_t cap;
};

/* A batch of n pages picked at random (in the order picked, not sorted). */
static void make_batch(struct batch *b, unsigned n, uint64_t *seed)
{
	memset(&b->z, 0, sizeof(b->z));
	for (unsigned i = 0; i < n; i++) {
		b->page[i] = (unsigned)(next_rand(seed) % AREA_PAGES);
		b->z.src[i] = area + (size_t)b->page[i] * PAGE;
	}
	b->z.npages = n;
	b->cap = (size_t)n * PAGE + 4096;
	if (!b->dst)
		b->dst = malloc(ZPOOL_MAX_PAGES * PAGE + 4096);
	b->z.dst = b->dst;
	b->z.cap = b->cap;
}

/* The frame of b decodes to its pages, in its order. */
static int check_batch(struct batch *b, ssize_t len)
{
	struct ram_decompressor d;
	size_t raw = (size_t)b->z.npages * PAGE;
	uint8_t *back = malloc(raw);
	int ok = 1;

	if (!back || len <= 0 || ram_decompressor_init(&d)) {
		free(back);
		return 0;
	}
	if (ram_decompress(&d, b->dst, (size_t)len, back, raw) != (ssize_t)raw)
		ok = 0;
	for (unsigned i = 0; ok && i < b->z.npages; i++)
		ok = !memcmp(back + (size_t)i * PAGE, area + (size_t)b->page[i] * PAGE, PAGE);
	ram_decompressor_free(&d);
	free(back);
	return ok;
}

static void test_roundtrip_any_order(void)
{
	static struct batch b[JOBS];
	struct zpool p;
	uint64_t seed = 42;
	unsigned good = 0;

	REQUIRE(zpool_init(&p, 3, PAGE, RAM_ZSTD_LEVEL_DEFAULT, false) == 0);
	CHECK_EQ(p.nthreads, 3);
	for (unsigned i = 0; i < JOBS; i++) {
		make_batch(&b[i], 1 + (unsigned)(next_rand(&seed) % ZPOOL_MAX_PAGES), &seed);
		zpool_submit(&p, &b[i].z);
	}
	/* Waited for last one first: each job is its own. */
	for (unsigned i = JOBS; i-- > 0;) {
		ssize_t len = zpool_wait(&p, &b[i].z);

		CHECK(zjob_done(&b[i].z));
		CHECK(len > 0 && (size_t)len < (size_t)b[i].z.npages * PAGE);
		good += check_batch(&b[i], len);
	}
	CHECK_EQ(good, JOBS);
	/* The same jobs again, after the first round: reusable. */
	for (unsigned i = 0; i < 4; i++) {
		make_batch(&b[i], ZPOOL_MAX_PAGES, &seed);
		zpool_submit(&p, &b[i].z);
	}
	for (unsigned i = 0; i < 4; i++)
		CHECK(check_batch(&b[i], zpool_wait(&p, &b[i].z)));
	zpool_free(&p);
	for (unsigned i = 0; i < JOBS; i++)
		free(b[i].dst);
}

struct submitter {
	struct zpool *p;
	uint64_t seed;
	unsigned good;
};

static void *submit_thread(void *arg)
{
	struct submitter *s = arg;
	struct batch b[4] = { 0 };

	/* Four in flight at a time, as a lane has four buffers. */
	for (unsigned round = 0; round < 50; round++) {
		unsigned k = round % 4;

		if (round >= 4)
			s->good += check_batch(&b[k], zpool_wait(s->p, &b[k].z));
		make_batch(&b[k], 1 + (unsigned)(next_rand(&s->seed) % 64), &s->seed);
		zpool_submit(s->p, &b[k].z);
	}
	for (unsigned k = 0; k < 4; k++) {
		s->good += check_batch(&b[k], zpool_wait(s->p, &b[k].z));
		free(b[k].dst);
	}
	return NULL;
}

static void test_two_submitters(void)
{
	struct zpool p;
	struct submitter s[2] = { { &p, 7, 0 }, { &p, 99, 0 } };
	pthread_t t[2];

	REQUIRE(zpool_init(&p, 2, PAGE, 1, true) == 0);
	for (unsigned i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, submit_thread, &s[i]) == 0);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(s[0].good, 50);
	CHECK_EQ(s[1].good, 50);
	zpool_free(&p);
}

/* Random pages do not shrink: -ENOSPC when the room is smaller than
 * the pages, so the lane sends them RAW. */
static void test_incompressible(void)
{
	struct zpool p;
	struct zjob j;
	uint8_t *pages = ram_buf_alloc(8 * PAGE), *dst = malloc(8 * PAGE);
	uint64_t seed = 5;

	REQUIRE(pages && dst);
	for (size_t i = 0; i < 8 * PAGE; i += 8) {
		uint64_t v = next_rand(&seed);

		memcpy(pages + i, &v, 8);
	}
	REQUIRE(zpool_init(&p, 1, PAGE, RAM_ZSTD_LEVEL_DEFAULT, false) == 0);
	memset(&j, 0, sizeof(j));
	for (unsigned i = 0; i < 8; i++)
		j.src[i] = pages + (size_t)i * PAGE;
	j.npages = 8;
	j.dst = dst;
	j.cap = 8 * PAGE - 1;
	zpool_submit(&p, &j);
	CHECK_EQ(zpool_wait(&p, &j), -ENOSPC);
	zpool_free(&p);
	ram_buf_free(pages, 8 * PAGE);
	free(dst);
}

static void test_init_limits(void)
{
	struct zpool p;

	CHECK_EQ(zpool_init(&p, 0, PAGE, 1, false), -EINVAL);
	zpool_free(&p); /* nothing to free, and no crash */
	CHECK_EQ(zpool_init(&p, ZPOOL_MAX_THREADS + 1, PAGE, 1, false), -EINVAL);
	CHECK_EQ(zpool_init(&p, 1, 0, 1, false), -EINVAL);
	/* The most workers, none ever given a job. */
	REQUIRE(zpool_init(&p, ZPOOL_MAX_THREADS, PAGE, 1, false) == 0);
	CHECK_EQ(p.nthreads, ZPOOL_MAX_THREADS);
	zpool_free(&p);
	zpool_free(&p); /* twice: a no-op */
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	fill_area();
	RUN(test_roundtrip_any_order);
	RUN(test_two_submitters);
	RUN(test_incompressible);
	RUN(test_init_limits);
	ram_buf_free(area, (size_t)AREA_PAGES * PAGE);
	return unit_done();
}
