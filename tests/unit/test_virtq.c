/* virtq_*: the split virtqueue walker (device side) against a driver-side
 * helper that lays out rings in a fake guest memory, writing every field
 * byte by byte in little-endian order. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "virtio/queue.h"
#include "vmm/mem.h"
#include "vmm/util.h"

#define MEM_SIZE  (1 * MiB)
#define DESC_GPA  0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA  0x30000ULL
#define DATA_GPA  0x40000ULL
#define TABLE_GPA 0x50000ULL /* indirect tables */

#define F_NEXT     1
#define F_WRITE    2
#define F_INDIRECT 4

/* The driver's side of one queue in a fake guest memory. */
struct drv {
	struct guest_mem mem;
	uint8_t *buf;
	struct virtq vq;
	uint16_t avail_idx; /* the driver's shadow of avail->idx */
};

static void put16(struct drv *d, uint64_t gpa, uint16_t v)
{
	d->buf[gpa] = (uint8_t)v;
	d->buf[gpa + 1] = (uint8_t)(v >> 8);
}

static void put32(struct drv *d, uint64_t gpa, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		d->buf[gpa + (uint64_t)i] = (uint8_t)(v >> (8 * i));
}

static void put64(struct drv *d, uint64_t gpa, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		d->buf[gpa + (uint64_t)i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const struct drv *d, uint64_t gpa)
{
	return (uint16_t)(d->buf[gpa] | d->buf[gpa + 1] << 8);
}

static uint32_t get32(const struct drv *d, uint64_t gpa)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | d->buf[gpa + (uint64_t)i];
	return v;
}

/* Allocates the memory and a ready queue of `size` entries. */
static int drv_init(struct drv *d, uint16_t size)
{
	memset(d, 0, sizeof(*d));
	d->buf = calloc(1, MEM_SIZE);
	if (!d->buf)
		return -1;
	guest_mem_layout(&d->mem, d->buf, MEM_SIZE);
	if (guest_mem_dirty_alloc(&d->mem) < 0) {
		free(d->buf);
		return -1;
	}
	virtq_reset(&d->vq, &d->mem);
	d->vq.size = size;
	d->vq.desc_gpa = DESC_GPA;
	d->vq.avail_gpa = AVAIL_GPA;
	d->vq.used_gpa = USED_GPA;
	d->vq.ready = true;
	return 0;
}

static void drv_free(struct drv *d)
{
	free(d->buf);
	free((void *)d->mem.dirty);
}

/* Starts both sides' indices at idx (for wrap-around). */
static void drv_set_idx(struct drv *d, uint16_t idx)
{
	d->avail_idx = idx;
	put16(d, AVAIL_GPA + 2, idx);
	d->vq.last_avail = idx;
	d->vq.used_idx = idx;
}

static void desc_at(struct drv *d, uint64_t table, uint16_t i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	uint64_t p = table + 16ULL * i;

	put64(d, p, addr);
	put32(d, p + 8, len);
	put16(d, p + 12, flags);
	put16(d, p + 14, next);
}

static void desc(struct drv *d, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	desc_at(d, DESC_GPA, i, addr, len, flags, next);
}

/* Makes the chain at head available (ring entry, then the index). */
static void avail_add(struct drv *d, uint16_t head)
{
	put16(d, AVAIL_GPA + 4 + 2ULL * (d->avail_idx % d->vq.size), head);
	d->avail_idx++;
	put16(d, AVAIL_GPA + 2, d->avail_idx);
}

/* Pops and expects a rejection whose reason contains `expect`. */
#define EXPECT_BROKEN(d, max, expect)                                                      \
	do {                                                                               \
		struct virtq_buf b_[16];                                                   \
		struct virtq_chain c_;                                                     \
		const char *why_ = NULL;                                                   \
		CHECK_EQ(virtq_pop(&(d)->vq, b_, (max), &c_, &why_), -EINVAL);             \
		CHECK_CONTAINS(why_, (expect));                                            \
		CHECK((d)->vq.broken);                                                     \
		/* A broken queue is never touched again. */                               \
		CHECK_EQ(virtq_pop(&(d)->vq, b_, (max), &c_, &why_), 0);                   \
		CHECK_EQ(virtq_pending(&(d)->vq), 0);                                      \
	} while (0)

static void test_simple_chain(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 8) == 0);
	desc(&d, 2, DATA_GPA, 100, F_NEXT, 5);
	desc(&d, 5, DATA_GPA + 0x1000, 200, F_WRITE, 0);
	avail_add(&d, 2);
	CHECK_EQ(virtq_pending(&d.vq), 1);

	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.head, 2);
	CHECK_EQ(chain.nbufs, 2);
	CHECK_EQ(chain.readable, 100);
	CHECK_EQ(chain.writable, 200);
	CHECK(bufs[0].hva == d.buf + DATA_GPA);
	CHECK_EQ(bufs[0].gpa, DATA_GPA);
	CHECK_EQ(bufs[0].len, 100);
	CHECK(!bufs[0].device_writes);
	CHECK(bufs[1].hva == d.buf + DATA_GPA + 0x1000);
	CHECK_EQ(bufs[1].gpa, DATA_GPA + 0x1000);
	CHECK_EQ(bufs[1].len, 200);
	CHECK(bufs[1].device_writes);
	CHECK_EQ(d.vq.last_avail, 1);
	CHECK_EQ(virtq_pending(&d.vq), 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	CHECK(!d.vq.broken);
	drv_free(&d);
}

static void test_several_chains(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;
	const uint16_t heads[3] = { 3, 0, 6 };

	REQUIRE(drv_init(&d, 8) == 0);
	desc(&d, 3, DATA_GPA, 10, 0, 0);
	desc(&d, 0, DATA_GPA + 0x100, 20, F_WRITE, 0);
	desc(&d, 6, DATA_GPA + 0x200, 30, F_NEXT, 7);
	desc(&d, 7, DATA_GPA + 0x300, 40, F_NEXT | F_WRITE, 1);
	desc(&d, 1, DATA_GPA + 0x400, 50, F_WRITE, 0);
	for (int i = 0; i < 3; i++)
		avail_add(&d, heads[i]);
	CHECK_EQ(virtq_pending(&d.vq), 3);

	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.head, 3);
	CHECK_EQ(chain.nbufs, 1);
	CHECK_EQ(chain.readable, 10);
	CHECK_EQ(chain.writable, 0);
	CHECK_EQ(virtq_pending(&d.vq), 2);

	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.head, 0);
	CHECK_EQ(chain.nbufs, 1);
	CHECK_EQ(chain.readable, 0);
	CHECK_EQ(chain.writable, 20);
	CHECK(bufs[0].device_writes);

	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.head, 6);
	CHECK_EQ(chain.nbufs, 3);
	CHECK_EQ(chain.readable, 30);
	CHECK_EQ(chain.writable, 90);
	CHECK_EQ(bufs[0].gpa, DATA_GPA + 0x200);
	CHECK_EQ(bufs[1].gpa, DATA_GPA + 0x300);
	CHECK_EQ(bufs[2].gpa, DATA_GPA + 0x400);
	CHECK(!bufs[0].device_writes && bufs[1].device_writes && bufs[2].device_writes);

	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	CHECK_EQ(d.vq.last_avail, 3);
	CHECK(!d.vq.broken);
	drv_free(&d);
}

static void test_empty_not_ready(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 4) == 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	CHECK(!d.vq.broken);
	CHECK_EQ(d.vq.last_avail, 0);

	desc(&d, 0, DATA_GPA, 8, 0, 0);
	avail_add(&d, 0);
	d.vq.ready = false;
	CHECK_EQ(virtq_pending(&d.vq), 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	d.vq.ready = true;
	d.vq.broken = true;
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	d.vq.broken = false;
	CHECK_EQ(virtq_pending(&d.vq), 1);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	drv_free(&d);
}

static void test_reset(void)
{
	struct drv d;
	struct guest_mem other;

	REQUIRE(drv_init(&d, 4) == 0);
	d.vq.last_avail = 7;
	d.vq.used_idx = 9;
	d.vq.broken = true;
	virtq_reset(&d.vq, &other);
	CHECK_EQ(d.vq.size, 0);
	CHECK(!d.vq.ready);
	CHECK(!d.vq.broken);
	CHECK_EQ(d.vq.last_avail, 0);
	CHECK_EQ(d.vq.used_idx, 0);
	CHECK_EQ(d.vq.desc_gpa, 0);
	CHECK_EQ(d.vq.avail_gpa, 0);
	CHECK_EQ(d.vq.used_gpa, 0);
	CHECK(d.vq.mem == &other);
	drv_free(&d);
}

/* Indices start at 65534 and cross 0 on both rings. */
static void test_wraparound(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 4) == 0);
	drv_set_idx(&d, 65534);
	for (uint16_t i = 0; i < 4; i++) {
		desc(&d, i, DATA_GPA + 0x100ULL * i, 16 + i, F_WRITE, 0);
		avail_add(&d, (uint16_t)(3 - i));
	}
	CHECK_EQ(get16(&d, AVAIL_GPA + 2), 2);
	CHECK_EQ(virtq_pending(&d.vq), 4);
	for (uint16_t i = 0; i < 4; i++) {
		CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
		CHECK_EQ(chain.head, 3 - i);
		CHECK_EQ(chain.writable, 16 + 3 - i);
		CHECK_EQ(virtq_push(&d.vq, chain.head, 100u + i), 0);
	}
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	CHECK_EQ(d.vq.last_avail, 2);
	CHECK_EQ(d.vq.used_idx, 2);
	CHECK_EQ(get16(&d, USED_GPA + 2), 2);
	/* Slots 65534 % 4 = 2, 3, then 0, 1. */
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 2), 3);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 2 + 4), 100);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 3), 2);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 3 + 4), 101);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 0), 1);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 0 + 4), 102);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 1), 0);
	CHECK_EQ(get32(&d, USED_GPA + 4 + 8 * 1 + 4), 103);
	CHECK(!d.vq.broken);
	drv_free(&d);
}

static void test_loop(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 8, F_NEXT, 1);
	desc(&d, 1, DATA_GPA, 8, F_NEXT, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "loop");
	CHECK_EQ(d.vq.last_avail, 0);
	drv_free(&d);

	/* A descriptor pointing at itself. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 2, DATA_GPA, 8, F_WRITE | F_NEXT, 2);
	avail_add(&d, 2);
	EXPECT_BROKEN(&d, 16, "loop");
	drv_free(&d);
}

/* A chain may use every descriptor once; one more is a loop. */
static void test_chain_length_bound(void)
{
	struct drv d;
	struct virtq_buf bufs[16];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 1, F_NEXT, 1);
	desc(&d, 1, DATA_GPA, 2, F_NEXT, 2);
	desc(&d, 2, DATA_GPA, 3, F_NEXT, 3);
	desc(&d, 3, DATA_GPA, 4, 0, 0);
	avail_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.nbufs, 4);
	CHECK_EQ(chain.readable, 10);

	/* With room for 4 buffers, the 5th descriptor is seen as the loop
	 * (not as one buffer too many): the bound is exactly the queue size. */
	desc(&d, 3, DATA_GPA, 4, F_NEXT, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 4, "chain longer than the queue");
	drv_free(&d);
}

static void test_next_out_of_range(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 8, F_NEXT, 4);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "next descriptor index out of range");
	drv_free(&d);

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 1, DATA_GPA, 8, F_NEXT, 0xffff);
	avail_add(&d, 1);
	EXPECT_BROKEN(&d, 16, "out of range");
	drv_free(&d);
}

static void test_head_out_of_range(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	avail_add(&d, 4);
	EXPECT_BROKEN(&d, 16, "head descriptor index out of range");
	drv_free(&d);
}

static void test_avail_idx_jump(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	/* Exactly size chains outstanding is fine. */
	REQUIRE(drv_init(&d, 4) == 0);
	drv_set_idx(&d, 65533);
	for (uint16_t i = 0; i < 4; i++) {
		desc(&d, i, DATA_GPA, 8, 0, 0);
		avail_add(&d, i);
	}
	CHECK_EQ(virtq_pending(&d.vq), 4);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 0);
	CHECK(!d.vq.broken);
	drv_free(&d);

	/* size + 1 is not. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 8, 0, 0);
	put16(&d, AVAIL_GPA + 2, 5);
	EXPECT_BROKEN(&d, 16, "available index jumped ahead");
	drv_free(&d);

	/* Nor is going backwards (which reads as a huge jump). */
	REQUIRE(drv_init(&d, 4) == 0);
	drv_set_idx(&d, 10);
	put16(&d, AVAIL_GPA + 2, 9);
	EXPECT_BROKEN(&d, 16, "available index jumped ahead");
	drv_free(&d);
}

static void test_buffer_bounds(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	/* Ending exactly at the end of memory is fine. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, MEM_SIZE - 10, 10, F_WRITE, 0);
	avail_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK(bufs[0].hva == d.buf + MEM_SIZE - 10);
	CHECK_EQ(chain.writable, 10);

	/* One byte more is not. */
	desc(&d, 0, MEM_SIZE - 10, 11, F_WRITE, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "buffer outside guest memory");
	drv_free(&d);

	/* Entirely beyond memory. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, MEM_SIZE, 1, 0, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "buffer outside guest memory");
	drv_free(&d);

	/* addr + len wraps around 2^64. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, UINT64_MAX - 5, 10, 0, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "buffer outside guest memory");
	drv_free(&d);

	/* A later buffer of a chain out of memory. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 10, F_NEXT, 1);
	desc(&d, 1, UINT64_MAX, 0xffffffff, F_WRITE, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "buffer outside guest memory");
	drv_free(&d);
}

static void test_zero_length(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, 0x12345, 0, F_NEXT, 1);
	desc(&d, 1, UINT64_MAX, 0, F_WRITE | F_NEXT, 2); /* address unused */
	desc(&d, 2, DATA_GPA, 4, F_WRITE, 0);
	avail_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.nbufs, 3);
	CHECK(bufs[0].hva == NULL);
	CHECK_EQ(bufs[0].len, 0);
	CHECK_EQ(bufs[0].gpa, 0x12345);
	CHECK(bufs[1].hva == NULL);
	CHECK_EQ(bufs[1].len, 0);
	CHECK(bufs[1].device_writes);
	CHECK(bufs[2].hva == d.buf + DATA_GPA);
	CHECK_EQ(chain.readable, 0);
	CHECK_EQ(chain.writable, 4);
	drv_free(&d);
}

static void test_readable_after_writable(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 8, F_NEXT, 1);
	desc(&d, 1, DATA_GPA + 8, 8, F_WRITE | F_NEXT, 2);
	desc(&d, 2, DATA_GPA + 16, 8, 0, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, "readable buffer after a writable one");
	drv_free(&d);
}

static void test_max_buffers(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 8, F_NEXT, 1);
	desc(&d, 1, DATA_GPA, 8, F_NEXT, 2);
	desc(&d, 2, DATA_GPA, 8, F_WRITE, 0);
	avail_add(&d, 0);
	avail_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 3, &chain, &why), 1);
	CHECK_EQ(chain.nbufs, 3);
	/* The same chain again, with room for only 2. */
	EXPECT_BROKEN(&d, 2, "chain has more buffers than the device accepts");
	drv_free(&d);

	/* max 0 accepts nothing. */
	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, DATA_GPA, 8, 0, 0);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 0, "more buffers");
	drv_free(&d);
}

/* The sums of a chain's lengths must not wrap: two 2 GiB buffers. Needs
 * more than 2 GiB of (untouched, MAP_NORESERVE) guest memory. */
static void test_length_overflow(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;
	struct guest_mem big;

	REQUIRE(guest_mem_alloc(&big, 2 * GiB + 2 * MiB) == 0);
	memset(&d, 0, sizeof(d));
	d.buf = big.base;
	virtq_reset(&d.vq, &big);
	d.vq.size = 4;
	d.vq.desc_gpa = DESC_GPA;
	d.vq.avail_gpa = AVAIL_GPA;
	d.vq.used_gpa = USED_GPA;
	d.vq.ready = true;

	desc(&d, 0, 0x100000, 0x7fffffff, F_WRITE | F_NEXT, 1);
	desc(&d, 1, 0x100000, 1, F_WRITE, 0);
	avail_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK_EQ(chain.writable, 0x80000000u);

	desc(&d, 0, 0x100000, 0x80000000u, F_WRITE | F_NEXT, 1);
	desc(&d, 1, 0x100000, 0x80000000u, F_WRITE, 0);
	avail_add(&d, 0);
	why = NULL;
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), -EINVAL);
	CHECK_CONTAINS(why, "4 GiB");
	CHECK(d.vq.broken);
	guest_mem_free(&big);
}

static void test_indirect(void)
{
	struct drv d;
	struct virtq_buf bufs[16];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 4) == 0);
	/* Table of 3, chained out of order inside the table: 0 -> 2 -> 1. */
	desc(&d, 1, TABLE_GPA, 48, F_INDIRECT, 0);
	desc_at(&d, TABLE_GPA, 0, DATA_GPA, 11, F_NEXT, 2);
	desc_at(&d, TABLE_GPA, 2, DATA_GPA + 0x100, 22, F_WRITE | F_NEXT, 1);
	desc_at(&d, TABLE_GPA, 1, DATA_GPA + 0x200, 33, F_WRITE, 0);
	avail_add(&d, 1);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 16, &chain, &why), 1);
	CHECK_EQ(chain.head, 1);
	CHECK_EQ(chain.nbufs, 3);
	CHECK_EQ(chain.readable, 11);
	CHECK_EQ(chain.writable, 55);
	CHECK(bufs[0].hva == d.buf + DATA_GPA);
	CHECK(bufs[1].hva == d.buf + DATA_GPA + 0x100);
	CHECK(bufs[2].hva == d.buf + DATA_GPA + 0x200);
	CHECK(!bufs[0].device_writes && bufs[1].device_writes && bufs[2].device_writes);

	/* An indirect table may be longer than the queue: 8 entries, queue 4. */
	desc(&d, 0, TABLE_GPA + 0x1000, 8 * 16, F_INDIRECT, 0);
	for (uint16_t i = 0; i < 8; i++)
		desc_at(&d, TABLE_GPA + 0x1000, i, DATA_GPA + i, 1, i < 7 ? F_NEXT : 0,
			(uint16_t)(i + 1));
	avail_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 16, &chain, &why), 1);
	CHECK_EQ(chain.nbufs, 8);
	CHECK_EQ(chain.readable, 8);
	CHECK_EQ(bufs[7].gpa, DATA_GPA + 7);

	/* Direct buffers ending in an indirect descriptor (virtio 1.2 2.7.5.3.2:
	 * the device must handle this), whose WRITE flag is ignored: the
	 * readable table entry does not count as readable-after-writable. */
	desc(&d, 2, DATA_GPA + 0x300, 5, F_NEXT, 3);
	desc(&d, 3, TABLE_GPA, 32, F_INDIRECT | F_WRITE, 0);
	desc_at(&d, TABLE_GPA, 0, DATA_GPA + 0x400, 6, F_NEXT, 1);
	desc_at(&d, TABLE_GPA, 1, DATA_GPA + 0x500, 7, F_WRITE, 0);
	avail_add(&d, 2);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 16, &chain, &why), 1);
	CHECK_EQ(chain.head, 2);
	CHECK_EQ(chain.nbufs, 3);
	CHECK_EQ(chain.readable, 11);
	CHECK_EQ(chain.writable, 7);
	CHECK_EQ(bufs[1].gpa, DATA_GPA + 0x400);
	CHECK(!bufs[1].device_writes);
	CHECK(!d.vq.broken);
	drv_free(&d);
}

/* One malformed indirect chain at head 0 on a fresh queue. */
static void indirect_bad(uint64_t addr, uint32_t len, uint16_t flags, const char *expect,
			 void (*table)(struct drv *))
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	desc(&d, 0, addr, len, flags, 1);
	desc(&d, 1, DATA_GPA, 8, 0, 0);
	if (table)
		table(&d);
	avail_add(&d, 0);
	EXPECT_BROKEN(&d, 16, expect);
	drv_free(&d);
}

static void table_nested(struct drv *d)
{
	desc_at(d, TABLE_GPA, 0, DATA_GPA, 8, F_NEXT, 1);
	desc_at(d, TABLE_GPA, 1, TABLE_GPA + 0x1000, 16, F_INDIRECT, 0);
	desc_at(d, TABLE_GPA + 0x1000, 0, DATA_GPA, 8, 0, 0);
}

static void table_next_outside(struct drv *d)
{
	/* next 2 is inside the queue (size 4) but outside the 2-entry table. */
	desc_at(d, TABLE_GPA, 0, DATA_GPA, 8, F_NEXT, 1);
	desc_at(d, TABLE_GPA, 1, DATA_GPA, 8, F_NEXT, 2);
}

static void table_loop(struct drv *d)
{
	desc_at(d, TABLE_GPA, 0, DATA_GPA, 8, F_NEXT, 1);
	desc_at(d, TABLE_GPA, 1, DATA_GPA, 8, F_NEXT, 0);
}

static void table_bad_buffer(struct drv *d)
{
	desc_at(d, TABLE_GPA, 0, MEM_SIZE - 4, 8, 0, 0);
}

static void test_indirect_bad(void)
{
	indirect_bad(TABLE_GPA, 32, F_INDIRECT | F_NEXT, "indirect descriptor with NEXT set", NULL);
	indirect_bad(TABLE_GPA, 40, F_INDIRECT, "not a nonzero multiple of 16", NULL);
	indirect_bad(TABLE_GPA, 8, F_INDIRECT, "not a nonzero multiple of 16", NULL);
	indirect_bad(TABLE_GPA, 0, F_INDIRECT, "not a nonzero multiple of 16", NULL);
	indirect_bad(TABLE_GPA, 32, F_INDIRECT, "nested indirect", table_nested);
	indirect_bad(TABLE_GPA, 32, F_INDIRECT, "next descriptor outside the indirect table",
		     table_next_outside);
	indirect_bad(TABLE_GPA, 32, F_INDIRECT, "loop", table_loop);
	indirect_bad(TABLE_GPA, 16, F_INDIRECT, "buffer outside guest memory", table_bad_buffer);
	indirect_bad(MEM_SIZE - 16, 32, F_INDIRECT, "indirect table outside guest memory", NULL);
	indirect_bad(UINT64_MAX - 15, 32, F_INDIRECT, "indirect table outside guest memory", NULL);
	/* 32769 entries fit in the 1 MiB memory but exceed the largest queue. */
	indirect_bad(0, 16 * (VIRTQ_MAX_SIZE + 1), F_INDIRECT, "larger than 32768", NULL);
}

static void test_push(void)
{
	struct drv d;
	struct virtq_buf bufs[4];
	struct virtq_chain chain;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 8) == 0);
	memset(d.buf + USED_GPA, 0xee, 4 + 8 * 8 + 2);
	put16(&d, USED_GPA + 2, 0);
	desc(&d, 5, DATA_GPA, 64, F_WRITE, 0);
	avail_add(&d, 5);
	CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), 1);
	CHECK(!guest_mem_test_dirty(&d.mem, USED_GPA));

	CHECK_EQ(virtq_push(&d.vq, chain.head, 0x01020304), 0);
	/* used->ring[0] = { id 5, len 0x01020304 }, little-endian bytes. */
	const uint8_t want[8] = { 5, 0, 0, 0, 0x04, 0x03, 0x02, 0x01 };
	CHECK(memcmp(d.buf + USED_GPA + 4, want, 8) == 0);
	CHECK_EQ(d.buf[USED_GPA + 2], 1);
	CHECK_EQ(d.buf[USED_GPA + 3], 0);
	CHECK_EQ(d.vq.used_idx, 1);
	/* used->flags and the next element are left alone. */
	CHECK_EQ(d.buf[USED_GPA], 0xee);
	CHECK_EQ(d.buf[USED_GPA + 12], 0xee);

	CHECK(guest_mem_test_dirty(&d.mem, USED_GPA));
	CHECK(!guest_mem_test_dirty(&d.mem, USED_GPA + GUEST_PAGE_SIZE));
	CHECK(!guest_mem_test_dirty(&d.mem, USED_GPA - 1));
	CHECK(!guest_mem_test_dirty(&d.mem, DESC_GPA));
	CHECK(!guest_mem_test_dirty(&d.mem, AVAIL_GPA));
	CHECK(!guest_mem_test_dirty(&d.mem, DATA_GPA));

	/* A second push goes to ring[1] and bumps the index to 2. */
	CHECK_EQ(virtq_push(&d.vq, 7, 0x100), 0);
	CHECK_EQ(get32(&d, USED_GPA + 12), 7);
	CHECK_EQ(get32(&d, USED_GPA + 16), 0x100);
	CHECK_EQ(get16(&d, USED_GPA + 2), 2);

	/* head out of range: refused, nothing written. */
	CHECK_EQ(virtq_push(&d.vq, 8, 1), -EINVAL);
	CHECK_EQ(get16(&d, USED_GPA + 2), 2);
	CHECK_EQ(d.vq.used_idx, 2);
	CHECK_EQ(d.buf[USED_GPA + 20], 0xee);
	drv_free(&d);
}

/* The used ring straddles a page boundary: both pages get marked. */
static void test_push_dirty_pages(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 8) == 0);
	d.vq.used_gpa = USED_GPA + GUEST_PAGE_SIZE - 8; /* ring[0] straddles the boundary */
	drv_set_idx(&d, 0);
	CHECK_EQ(virtq_push(&d.vq, 1, 2), 0);
	CHECK(guest_mem_test_dirty(&d.mem, USED_GPA));
	CHECK(guest_mem_test_dirty(&d.mem, USED_GPA + GUEST_PAGE_SIZE));
	CHECK(!guest_mem_test_dirty(&d.mem, USED_GPA + 2 * GUEST_PAGE_SIZE));
	CHECK_EQ(get32(&d, USED_GPA + GUEST_PAGE_SIZE - 4), 1);
	CHECK_EQ(get32(&d, USED_GPA + GUEST_PAGE_SIZE), 2);
	drv_free(&d);

	/* The index on one page, the element at the start of the next. */
	REQUIRE(drv_init(&d, 8) == 0);
	d.vq.used_gpa = USED_GPA + GUEST_PAGE_SIZE - 4;
	CHECK_EQ(virtq_push(&d.vq, 1, 2), 0);
	CHECK(guest_mem_test_dirty(&d.mem, USED_GPA));
	CHECK(guest_mem_test_dirty(&d.mem, USED_GPA + GUEST_PAGE_SIZE));
	drv_free(&d);
}

static void test_push_refused(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 8) == 0);
	d.vq.used_gpa = MEM_SIZE - 8; /* used ring not in memory */
	CHECK_EQ(virtq_push(&d.vq, 0, 1), -EINVAL);
	CHECK_EQ(d.vq.used_idx, 0);
	d.vq.used_gpa = USED_GPA;
	d.vq.broken = true;
	CHECK_EQ(virtq_push(&d.vq, 0, 1), -EINVAL);
	d.vq.broken = false;
	d.vq.ready = false;
	CHECK_EQ(virtq_push(&d.vq, 0, 1), -EINVAL);
	CHECK_EQ(get16(&d, USED_GPA + 2), 0);
	CHECK(!guest_mem_test_dirty(&d.mem, USED_GPA));
	d.vq.ready = true;
	CHECK_EQ(virtq_push(&d.vq, 0, 1), 0);
	CHECK_EQ(get16(&d, USED_GPA + 2), 1);
	drv_free(&d);
}

static void test_no_interrupt(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	CHECK(!virtq_interrupt_suppressed(&d.vq));
	put16(&d, AVAIL_GPA, 1);
	CHECK(virtq_interrupt_suppressed(&d.vq));
	put16(&d, AVAIL_GPA, 0xfffe); /* every other bit */
	CHECK(!virtq_interrupt_suppressed(&d.vq));
	put16(&d, AVAIL_GPA, 0x0101);
	CHECK(virtq_interrupt_suppressed(&d.vq));
	drv_free(&d);
}

/* The device asks for no kicks while it polls (the balloon's hint rounds):
 * the used ring's flags say so, the page is marked for migration, and the
 * index next to the flags is left alone. */
static void test_set_kicks(void)
{
	struct drv d;

	REQUIRE(drv_init(&d, 4) == 0);
	drv_set_idx(&d, 0);
	CHECK_EQ(virtq_push(&d.vq, 1, 0), 0);
	d.mem.dirty[0] = 0; /* what the push marked */
	CHECK_EQ(virtq_set_kicks(&d.vq, false), 0);
	CHECK_EQ(get16(&d, USED_GPA), 1); /* VRING_USED_F_NO_NOTIFY */
	CHECK_EQ(get16(&d, USED_GPA + 2), 1);
	CHECK(guest_mem_test_dirty(&d.mem, USED_GPA));
	CHECK_EQ(virtq_set_kicks(&d.vq, true), 0);
	CHECK_EQ(get16(&d, USED_GPA), 0);
	CHECK_EQ(get16(&d, USED_GPA + 2), 1);
	/* Not on a queue the device may not touch. */
	d.vq.broken = true;
	CHECK_EQ(virtq_set_kicks(&d.vq, false), -EINVAL);
	CHECK_EQ(get16(&d, USED_GPA), 0);
	d.vq.broken = false;
	d.vq.used_gpa = MEM_SIZE - 1;
	CHECK_EQ(virtq_set_kicks(&d.vq, false), -EINVAL);
	drv_free(&d);
}

static void expect_invalid(struct drv *d, const char *expect)
{
	const char *why = NULL;

	CHECK_EQ(virtq_validate(&d->vq, &why), -EINVAL);
	CHECK_CONTAINS(why, expect);
}

static void test_validate(void)
{
	struct drv d;
	const char *why = NULL;

	REQUIRE(drv_init(&d, 256) == 0);
	CHECK_EQ(virtq_validate(&d.vq, &why), 0);

	d.vq.size = 0;
	expect_invalid(&d, "size is zero");
	d.vq.size = VIRTQ_MAX_SIZE + 1;
	expect_invalid(&d, "size larger");
	d.vq.size = 256;

	d.vq.desc_gpa = DESC_GPA + 8;
	expect_invalid(&d, "descriptor table not 16-byte aligned");
	d.vq.desc_gpa = MEM_SIZE - 16 * 256;
	CHECK_EQ(virtq_validate(&d.vq, &why), 0);
	d.vq.desc_gpa = MEM_SIZE - 16 * 255;
	expect_invalid(&d, "descriptor table outside guest memory");
	d.vq.desc_gpa = UINT64_MAX - 15;
	expect_invalid(&d, "descriptor table outside guest memory");
	d.vq.desc_gpa = DESC_GPA;

	d.vq.avail_gpa = AVAIL_GPA + 1;
	expect_invalid(&d, "available ring not 2-byte aligned");
	d.vq.avail_gpa = MEM_SIZE - (6 + 2 * 256);
	CHECK_EQ(virtq_validate(&d.vq, &why), 0);
	d.vq.avail_gpa = MEM_SIZE - (6 + 2 * 256) + 2;
	expect_invalid(&d, "available ring outside guest memory");
	d.vq.avail_gpa = AVAIL_GPA;

	d.vq.used_gpa = USED_GPA + 2;
	expect_invalid(&d, "used ring not 4-byte aligned");
	d.vq.used_gpa = MEM_SIZE - (6 + 8 * 256) - 2; /* 4-aligned, 2 bytes spare */
	CHECK_EQ(virtq_validate(&d.vq, &why), 0);
	d.vq.used_gpa = MEM_SIZE - (6 + 8 * 256) + 2;
	expect_invalid(&d, "used ring outside guest memory");
	d.vq.used_gpa = UINT64_MAX - 3;
	expect_invalid(&d, "used ring outside guest memory");

	/* virtq_pop on such a queue breaks it. */
	{
		struct virtq_buf bufs[4];
		struct virtq_chain chain;

		why = NULL;
		CHECK_EQ(virtq_pop(&d.vq, bufs, 4, &chain, &why), -EINVAL);
		CHECK_CONTAINS(why, "used ring outside guest memory");
		CHECK(d.vq.broken);
	}
	drv_free(&d);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_simple_chain);
	RUN(test_several_chains);
	RUN(test_empty_not_ready);
	RUN(test_reset);
	RUN(test_wraparound);
	RUN(test_loop);
	RUN(test_chain_length_bound);
	RUN(test_next_out_of_range);
	RUN(test_head_out_of_range);
	RUN(test_avail_idx_jump);
	RUN(test_buffer_bounds);
	RUN(test_zero_length);
	RUN(test_readable_after_writable);
	RUN(test_max_buffers);
	RUN(test_length_overflow);
	RUN(test_indirect);
	RUN(test_indirect_bad);
	RUN(test_push);
	RUN(test_push_dirty_pages);
	RUN(test_push_refused);
	RUN(test_no_interrupt);
	RUN(test_set_kicks);
	RUN(test_validate);
	return unit_done();
}
