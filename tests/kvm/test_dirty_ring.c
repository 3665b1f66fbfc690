/* KVM self-test for the dirty ring (vmm/dirty_ring.c, and the dirty-ring
 * mode of migrate/dirty.c), in the style of test_migrate_state.c: each test
 * builds a tiny VM (tvm.h) with a ring (enabled before its one vCPU exists, as
 * vm.c does) and checks what a sync reports. Needs real KVM with
 * KVM_CAP_DIRTY_LOG_RING (each test says SKIP without it):
 *
 *	make build/kvmtests/test_dirty_ring
 *	scripts/testhost build/kvmtests/test_dirty_ring
 *
 * Memory: 16 MiB in two slots whose guest physical addresses differ from
 * their place in the mapping (slot 0: 8 MiB at 0; slot 1: 8 MiB at guest
 * 16 MiB, mapping offset 8 MiB), so that a harvest that took an offset for
 * an address would show. The guest runs flat 32-bit protected mode (no
 * paging, so it reaches both slots) at 0x1000 and does, forever:
 *	counter++ (dword at 0xf00); esi++;
 *	for (i = 0; i < ctrl.count; i++) *(ctrl.base + i * 4096) = esi;
 *	out 0x10, al (= low byte of counter)
 * so each KVM_RUN returns after one iteration (or at a ring-full exit), and
 * the host picks the pages it writes through ctrl.base (0xf04) and
 * ctrl.count (0xf08). */
#include <errno.h>
#include <linux/kvm.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "../unit/unit.h"
#include "migrate/bitmap.h"
#include "migrate/dirty.h"
#include "tvm.h"
#include "vmm/dirty_ring.h"
#include "vmm/mem.h"
#include "vmm/util.h"

#define SLOT_SIZE (8u << 20)
#define MEM_SIZE (2 * SLOT_SIZE)
#define NPAGES (MEM_SIZE / 4096)
#define SLOT1_GPA (16u << 20)
#define CTRL_BASE_GPA CTRL_GPA
#define CTRL_COUNT_GPA (CTRL_GPA + 4)

static const uint8_t guest_code[] = {
	0xff, 0x05, 0x00, 0x0f, 0x00, 0x00, /* 0:  incl 0xf00 */
	0x46,                               /* 6:  inc %esi */
	0x8b, 0x1d, 0x04, 0x0f, 0x00, 0x00, /* 7:  mov 0xf04,%ebx */
	0x8b, 0x0d, 0x08, 0x0f, 0x00, 0x00, /* 13: mov 0xf08,%ecx */
	0xe3, 0x0a,                         /* 19: jecxz done */
	0x89, 0x33,                         /* 21: wr: mov %esi,(%ebx) */
	0x81, 0xc3, 0x00, 0x10, 0x00, 0x00, /* 23: add $0x1000,%ebx */
	0xe2, 0xf6,                         /* 29: loop wr */
	0xa1, 0x00, 0x0f, 0x00, 0x00,       /* 31: done: mov 0xf00,%eax */
	0xe6, 0x10,                         /* 36: out %al,$0x10 */
	0xeb, 0xd8,                         /* 38: jmp 0 */
};

static void set_ctrl(struct tvm *t, uint32_t base, uint32_t count)
{
	memcpy(gpa_to_hva(&t->mem, CTRL_BASE_GPA, 4), &base, 4);
	memcpy(gpa_to_hva(&t->mem, CTRL_COUNT_GPA, 4), &count, 4);
}

/* Page index in the mapping (what dirty_sync reports) of a guest address. */
static uint64_t page_of(struct tvm *t, uint64_t gpa)
{
	return guest_mem_offset(&t->mem, gpa) >> GUEST_PAGE_SHIFT;
}

/* Enables a ring of `entries`, or with entries 0 the smallest KVM takes
 * (KVM keeps entries in reserve, more on Intel with PML, and refuses a
 * ring too small for them with EINVAL). 1: KVM has no ring (skip). */
static int enable_ring(struct tvm *t, uint32_t entries)
{
	char err[256];
	int rc = -EINVAL;

	for (uint32_t e = entries ? entries : DIRTY_RING_MIN_ENTRIES;
	     rc == -EINVAL && e <= (entries ? entries : 8192u); e *= 2) {
		rc = dirty_ring_enable(t->fd, e, err, sizeof(err));
		if (!rc)
			t->rings.entries = e;
	}
	if (rc == -EOPNOTSUPP) {
		printf("SKIP: %s\n", err);
		return 1;
	}
	if (rc)
		unit_fail(__FILE__, __LINE__, "%s", err);
	return rc ? -1 : 0;
}

/* Ready for a test: created, a ring of ring_entries (see enable_ring)
 * enabled, and warmed up. 0, -1, or 1 when KVM has no ring: the test
 * skips, and t is destroyed already. */
static int tvm_create(struct tvm *t, uint32_t ring_entries)
{
	char err[256];
	int rc;

	if (tvm_create_vm(t))
		return -1;
	/* Right after KVM_CREATE_VM, as KVM's API asks (and vm.c does). */
	rc = enable_ring(t, ring_entries);
	if (rc == 1)
		tvm_destroy(t);
	if (rc)
		return rc;
	if (tvm_setup_vm(t) || tvm_add_ram(t, MEM_SIZE, SLOT1_GPA))
		return -1;
	memcpy(gpa_to_hva(&t->mem, CODE_GPA, sizeof(guest_code)), guest_code, sizeof(guest_code));
	if (tvm_create_vcpu(t))
		return -1;
	if (dirty_ring_map(&t->ring, t->vcpu_fd, t->rings.entries, err, sizeof(err))) {
		unit_fail(__FILE__, __LINE__, "%s", err);
		return -1;
	}
	t->rings.ring = &t->ring;
	t->rings.n = 1;
	printf("INFO: dirty ring of %u entries\n", t->rings.entries);
	if (tvm_set_regs(t, TVM_FLAT32))
		return -1;
	return warm_up(t);
}

/* The pages the guest writes with ctrl (base, count), and page 0. */
static void expect_writes(struct tvm *t, struct bitmap *want, uint32_t base, uint32_t count)
{
	bitmap_clear_all(want);
	bitmap_set(want, page_of(t, COUNTER_GPA));
	for (uint32_t i = 0; i < count; i++)
		bitmap_set(want, page_of(t, base + i * 4096ULL));
}

static void test_ring_sync(void)
{
	struct dirty_log d;
	struct bitmap b, want;
	struct tvm t;
	char err[256];
	int rc;

	rc = tvm_create(&t, 4096);
	if (rc == 1)
		return;
	REQUIRE(rc == 0);
	/* A VM with a ring has no other mode. */
	CHECK_EQ(dirty_init(&d, t.fd, &t.mem, &t.rings, DIRTY_MODE_GET_LOG, err, sizeof(err)),
		 -EINVAL);
	CHECK_CONTAINS(err, "dirty ring");
	CHECK_EQ(dirty_init(&d, t.fd, &t.mem, &t.rings, DIRTY_MODE_CLEAR_LOG, err, sizeof(err)),
		 -EINVAL);
	REQUIRE(dirty_init(&d, t.fd, &t.mem, &t.rings, DIRTY_MODE_AUTO, err, sizeof(err)) == 0);
	CHECK_STREQ(dirty_mode_name(&d), "dirty-ring");
	REQUIRE(bitmap_alloc(&b, guest_mem_pages(&t.mem)) == 0);
	REQUIRE(bitmap_alloc(&want, guest_mem_pages(&t.mem)) == 0);
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);

	/* The first sync reports every page; then nothing ran, nothing is dirty. */
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), NPAGES);
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), 0);

	/* Slot 0: pages 0x20-0x27. */
	set_ctrl(&t, 0x20000, 8);
	REQUIRE(run_iterations(&t, 20) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	expect_writes(&t, &want, 0x20000, 8);
	check_dirty_set("slot 0", &b, &want);
	CHECK_EQ(counter(&t), 20);
	/* Harvested and reset: nothing new until the guest writes again... */
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), 0);
	/* ...and the reset re-protected them: writing again logs them again. */
	REQUIRE(run_iterations(&t, 3) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_set("slot 0 again", &b, &want);

	/* Slot 1 (guest 16 MiB, mapping 8 MiB), and a VMM-side write. */
	set_ctrl(&t, SLOT1_GPA + 0x3000, 4);
	REQUIRE(run_iterations(&t, 5) == 0);
	guest_mem_mark_dirty(&t.mem, SLOT1_GPA + 0x10000, 1);
	REQUIRE(sync_into(&d, &b) == 0);
	expect_writes(&t, &want, SLOT1_GPA + 0x3000, 4);
	bitmap_set(&want, page_of(&t, SLOT1_GPA + 0x10000));
	CHECK_EQ(page_of(&t, SLOT1_GPA + 0x3000), SLOT_SIZE / 4096 + 3);
	check_dirty_set("slot 1", &b, &want);
	CHECK(!guest_mem_test_dirty(&t.mem, SLOT1_GPA + 0x10000)); /* taken by the sync */
	CHECK_EQ(t.ring.ignored, 0);

	/* Clearing is a no-op in this mode, and must not call
	 * KVM_CLEAR_DIRTY_LOG (which fails with a ring). */
	bitmap_set_all(&b);
	CHECK_EQ(dirty_clear(&d, 0, NPAGES, err, sizeof(err)), 0);
	CHECK_EQ(dirty_clear_mask(&d, 0, NPAGES, b.words, err, sizeof(err)), 0);

	REQUIRE(dirty_stop(&d, err, sizeof(err)) == 0);
	{
		struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = b.words };

		CHECK(ioctl(t.fd, KVM_GET_DIRTY_LOG, &log) < 0 && errno == ENXIO);
	}
	/* Logging off: the guest's writes fill no ring. */
	REQUIRE(run_iterations(&t, 5) == 0);
	pthread_mutex_lock(&t.ring.lock);
	CHECK_EQ(dirty_ring_harvest(&t.ring, &t.mem, NULL), 0);
	pthread_mutex_unlock(&t.ring.lock);
	/* And on again: every page, then just what the guest writes. */
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), NPAGES);
	REQUIRE(run_iterations(&t, 2) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	expect_writes(&t, &want, SLOT1_GPA + 0x3000, 4);
	check_dirty_set("after a restart", &b, &want);
	CHECK_EQ(dirty_stop(&d, err, sizeof(err)), 0);
	CHECK_EQ(t.full_exits, 0);
	bitmap_free(&b);
	bitmap_free(&want);
	dirty_destroy(&d);
	tvm_destroy(&t);
}

/* The smallest ring KVM takes, and one iteration that writes more pages
 * than it holds: KVM exits with KVM_EXIT_DIRTY_RING_FULL (several times),
 * run_once harvests into the VMM-side bitmap and resets as vcpu.c does,
 * and the sync still reports exactly the pages written. */
static void test_ring_full(void)
{
	const uint32_t base = 0x10000, count = 2000; /* pages 0x10 to 0x7df of slot 0 */
	struct dirty_log d;
	struct bitmap b, want;
	struct tvm t;
	char err[256];
	int rc;

	rc = tvm_create(&t, 0);
	if (rc == 1)
		return;
	REQUIRE(rc == 0);
	REQUIRE(t.rings.entries < count);
	REQUIRE(dirty_init(&d, t.fd, &t.mem, &t.rings, DIRTY_MODE_DIRTY_RING, err,
			   sizeof(err)) == 0);
	REQUIRE(bitmap_alloc(&b, guest_mem_pages(&t.mem)) == 0);
	REQUIRE(bitmap_alloc(&want, guest_mem_pages(&t.mem)) == 0);
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);
	REQUIRE(sync_into(&d, &b) == 0);

	set_ctrl(&t, base, count);
	REQUIRE(run_iterations(&t, 1) == 0);
	printf("INFO: %u ring-full exits for %u pages, %llu entries harvested\n", t.full_exits,
	       count, (unsigned long long)t.ring.harvested);
	CHECK(t.full_exits >= 1);
	CHECK_EQ(counter(&t), 1);
	REQUIRE(sync_into(&d, &b) == 0);
	expect_writes(&t, &want, base, count);
	check_dirty_set("a ring that filled", &b, &want);
	CHECK_EQ(t.ring.ignored, 0);
	/* Twice more, with the pages re-protected in between. */
	REQUIRE(run_iterations(&t, 2) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_set("a ring that filled again", &b, &want);
	CHECK_EQ(dirty_stop(&d, err, sizeof(err)), 0);
	bitmap_free(&b);
	bitmap_free(&want);
	dirty_destroy(&d);
	tvm_destroy(&t);
}

/* ---- a migration in miniature ---- */

struct mini {
	struct tvm *t;
	_Atomic bool stop;
	_Atomic bool failed;
	unsigned iterations;
};

/* The vCPU thread: runs the guest until told to stop, harvesting its ring
 * when full, as vcpu.c does. */
static void *mini_vcpu(void *arg)
{
	struct mini *m = arg;

	while (!atomic_load(&m->stop)) {
		if (tvm_run_once(m->t) < 0) {
			atomic_store(&m->failed, true);
			break;
		}
		m->iterations++;
	}
	return NULL;
}

/* Copies every page a sync reports into copy, as a pass would send it. */
static int copy_pass(struct dirty_log *d, struct bitmap *b, struct tvm *t, uint8_t *copy)
{
	if (sync_into(d, b))
		return -1;
	for (uint64_t p = bitmap_find_next_set(b, 0); p < b->nbits;
	     p = bitmap_find_next_set(b, p + 1))
		memcpy(copy + p * 4096, t->mem.base + p * 4096, 4096);
	return 0;
}

/* Syncs and copies while a vCPU thread writes and fills a small ring;
 * then the vCPU stops, one last sync and copy, and the copy must equal
 * guest memory: no write was lost between a harvest, the reset that
 * re-protects and the read. */
static void test_ring_no_lost_write(void)
{
	struct mini m = { 0 };
	struct dirty_log d;
	struct bitmap b;
	struct tvm t;
	pthread_t vcpu;
	uint8_t *copy;
	char err[256];
	uint64_t differ = 0;
	int rc;

	rc = tvm_create(&t, 0);
	if (rc == 1)
		return;
	REQUIRE(rc == 0);
	copy = calloc(1, MEM_SIZE);
	REQUIRE(copy);
	REQUIRE(dirty_init(&d, t.fd, &t.mem, &t.rings, DIRTY_MODE_AUTO, err, sizeof(err)) == 0);
	REQUIRE(bitmap_alloc(&b, guest_mem_pages(&t.mem)) == 0);
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);
	set_ctrl(&t, 0x10000, 1500);
	m.t = &t;
	REQUIRE(copy_pass(&d, &b, &t, copy) == 0); /* the bulk pass: every page */
	REQUIRE(thread_create(&vcpu, mini_vcpu, &m) == 0);
	for (unsigned i = 0; i < 40 && !atomic_load(&m.failed); i++) {
		struct timespec ts = { .tv_nsec = 5 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		if (copy_pass(&d, &b, &t, copy))
			break;
	}
	atomic_store(&m.stop, true);
	pthread_join(vcpu, NULL);
	if (atomic_load(&m.failed))
		unit_fail(__FILE__, __LINE__, "vCPU thread: %s", t.error);
	REQUIRE(copy_pass(&d, &b, &t, copy) == 0); /* stop-and-copy */
	for (uint64_t p = 0; p < NPAGES; p++)
		differ += memcmp(copy + p * 4096, t.mem.base + p * 4096, 4096) != 0;
	printf("INFO: %u guest iterations, %u ring-full exits, %llu entries harvested\n",
	       m.iterations, t.full_exits, (unsigned long long)t.ring.harvested);
	CHECK(m.iterations > 0);
	CHECK_EQ(differ, 0);
	CHECK_EQ(dirty_stop(&d, err, sizeof(err)), 0);
	bitmap_free(&b);
	dirty_destroy(&d);
	free(copy);
	tvm_destroy(&t);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	if (tvm_open_kvm())
		return 1;
	RUN(test_ring_sync);
	RUN(test_ring_full);
	RUN(test_ring_no_lost_write);
	close(kvm_fd);
	return unit_done();
}
