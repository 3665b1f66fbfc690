/* The virtio STATE sections (virtio_save/virtio_load in virtio/mmio.c,
 * and the balloon's hook), on a balloon set up without KVM: a section
 * loads only if the source could have been in that state. Each refusal
 * here was found by tests/fuzz/fuzz_devload.c. */
#include <errno.h>
#include <linux/virtio_balloon.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/state.h"
#include "tests/unit/unit.h"
#include "virtio/balloon.h"
#include "vmm/vm.h"

#define RAM_PAGES 200

/* Offsets in the section (docs/migration-state.md, virtio_save()). */
#define OFF_STATUS     0
#define OFF_FEATURES   12
#define OFF_ISTATUS    28
#define OFF_QUEUES     36
#define QUEUE_SIZE     32 /* per queue: size, flags, 3 addresses, 2 indices */
#define Q_FLAGS        2
#define Q_LAST_AVAIL   28
#define Q_USED_IDX     30
#define OFF_BALLOON    (OFF_QUEUES + 5 * QUEUE_SIZE)
#define B_NUM_PAGES    0
#define B_NEXT_ID      16
#define B_HELD         20
#define B_BITMAP       32 /* after le64 word count */

static struct vm vm;
static struct balloon b;
static uint8_t saved[1024];
static size_t saved_len;

static void put16(size_t off, uint16_t v)
{
	saved[off] = (uint8_t)v;
	saved[off + 1] = (uint8_t)(v >> 8);
}

static void put32(size_t off, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		saved[off + i] = (uint8_t)(v >> (8 * i));
}

/* An active balloon (stats and hinting negotiated, every queue ready and
 * two chains of queue 0 in flight), saved into saved[]. */
static int setup(void)
{
	struct balloon_options o = { .enabled = true, .stats_interval_s = 5, .free_page_hint = true };
	struct state_writer w;
	char err[256];

	memset(&vm, 0, sizeof(vm));
	vm.fd = -1;
	if (guest_mem_alloc(&vm.mem, RAM_PAGES * GUEST_PAGE_SIZE) ||
	    balloon_init(&vm, &b, &o, err, sizeof(err)))
		return -1;
	b.dev.status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	b.dev.driver_features = 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_BALLOON_F_STATS_VQ |
				1ULL << VIRTIO_BALLOON_F_FREE_PAGE_HINT;
	for (unsigned q = 0; q < 4; q++) {
		struct virtq *vq = &b.dev.queues[q];

		vq->size = 64;
		vq->desc_gpa = 0x10000 + q * 0x2000;
		vq->avail_gpa = vq->desc_gpa + 0x800;
		vq->used_gpa = vq->desc_gpa + 0xc00;
		vq->ready = true;
	}
	b.dev.queues[0].last_avail = 7;
	b.dev.queues[0].used_idx = 5;
	b.num_pages = 10;
	b.discarded[0] = 0xff;
	state_writer_init(&w);
	if (virtio_save(&b.dev, &w) || w.len > sizeof(saved)) {
		state_writer_free(&w);
		return -1;
	}
	memcpy(saved, w.buf, w.len);
	saved_len = w.len;
	state_writer_free(&w);
	return 0;
}

static void teardown(void)
{
	balloon_destroy(&b);
	guest_mem_free(&vm.mem);
}

static int load(void)
{
	struct state_reader r;

	state_reader_init(&r, saved, saved_len);
	return virtio_load(&b.dev, &r);
}

static void test_round_trip(void)
{
	REQUIRE(setup() == 0);
	CHECK_EQ(saved_len, OFF_BALLOON + B_BITMAP + 4 * 8);
	CHECK_EQ(load(), 0);
	CHECK_EQ(b.dev.queues[0].last_avail, 7);
	CHECK_EQ(b.num_pages, 10);
	teardown();
}

/* Queue flags hold ready (1) and broken (2), nothing else. */
static void test_queue_flags(void)
{
	REQUIRE(setup() == 0);
	put16(OFF_QUEUES + Q_FLAGS, 1 | 4);
	CHECK_EQ(load(), -EINVAL);
	put16(OFF_QUEUES + Q_FLAGS, 1 | 2);
	CHECK_EQ(load(), 0);
	teardown();
}

/* The transport only ever raises the used-buffer and config bits. */
static void test_interrupt_status(void)
{
	REQUIRE(setup() == 0);
	put32(OFF_ISTATUS, 4);
	CHECK_EQ(load(), -EINVAL);
	put32(OFF_ISTATUS, VIRTIO_INT_USED | VIRTIO_INT_CONFIG);
	CHECK_EQ(load(), 0);
	teardown();
}

/* FEATURES_OK sticks only with VIRTIO_F_VERSION_1 accepted (write_status). */
static void test_features_ok_needs_version_1(void)
{
	REQUIRE(setup() == 0);
	put32(OFF_FEATURES + 4, 0); /* bit 32 is VERSION_1 */
	CHECK_EQ(load(), -EINVAL);
	put32(OFF_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	CHECK_EQ(load(), 0); /* before FEATURES_OK the driver may still choose */
	teardown();
}

/* The used index may lag the chains taken (in flight), never lead them:
 * with the used ring on top of the available ring, each chain returned
 * would make another available, and queue_notify would never return. */
static void test_used_index_ahead(void)
{
	REQUIRE(setup() == 0);
	put16(OFF_QUEUES + Q_LAST_AVAIL, 5);
	put16(OFF_QUEUES + Q_USED_IDX, 7);
	CHECK_EQ(load(), -EINVAL);
	put16(OFF_QUEUES + Q_USED_IDX, 5);
	CHECK_EQ(load(), 0);
	teardown();
}

/* Balloon state the device never holds. */
static void test_balloon_fields(void)
{
	REQUIRE(setup() == 0);
	put32(OFF_BALLOON + B_NEXT_ID, 1); /* 0 and 1 are STOP and DONE */
	CHECK_EQ(load(), -EINVAL);
	put32(OFF_BALLOON + B_NEXT_ID, 2);
	CHECK_EQ(load(), 0);
	put16(OFF_BALLOON + B_HELD, 2); /* a flag */
	CHECK_EQ(load(), -EINVAL);
	put16(OFF_BALLOON + B_HELD, 0);
	put32(OFF_BALLOON + B_NUM_PAGES, RAM_PAGES + 1); /* balloon_set_size's limit */
	CHECK_EQ(load(), -EINVAL);
	put32(OFF_BALLOON + B_NUM_PAGES, RAM_PAGES);
	CHECK_EQ(load(), 0);
	/* Bit 200 of the discarded bitmap is past the end of RAM. */
	saved[OFF_BALLOON + B_BITMAP + 3 * 8 + 1] = 1;
	CHECK_EQ(load(), -EINVAL);
	saved[OFF_BALLOON + B_BITMAP + 3 * 8 + 1] = 0;
	saved[OFF_BALLOON + B_BITMAP + 3 * 8] = 0x80; /* page 199: the last one */
	CHECK_EQ(load(), 0);
	teardown();
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_round_trip);
	RUN(test_queue_flags);
	RUN(test_interrupt_status);
	RUN(test_features_ok_needs_version_1);
	RUN(test_used_index_ahead);
	RUN(test_balloon_fields);
	return unit_done();
}
