/* KVM self-test for the dirty ring (vmm/dirty_ring.c, and the dirty-ring
 * mode of migrate/dirty.c), in the style of test_migrate_state.c: each test
 * builds a tiny VM with a ring (enabled before its one vCPU exists, as
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
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../unit/unit.h"
#include "migrate/bitmap.h"
#include "migrate/dirty.h"
#include "vmm/dirty_ring.h"
#include "vmm/mem.h"
#include "vmm/util.h"

#define SLOT_SIZE (8u << 20)
#define MEM_SIZE (2 * SLOT_SIZE)
#define NPAGES (MEM_SIZE / 4096)
#define SLOT1_GPA (16u << 20)
#define CODE_GPA 0x1000
#define COUNTER_GPA 0xf00
#define CTRL_BASE_GPA 0xf04
#define CTRL_COUNT_GPA 0xf08
#define GUEST_PORT 0x10
#define TSS_GPA 0xfffbd000ULL
#define IDENTITY_MAP_GPA 0xfffbc000ULL

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

static int kvm_fd = -1;

struct tvm {
	int fd;
	int vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	struct guest_mem mem;
	struct dirty_ring ring;
	struct dirty_rings rings;
	unsigned full_exits; /* KVM_EXIT_DIRTY_RING_FULL seen */
	char error[256];     /* the first failure of run_once, for threads */
};

#define TEST_IOCTL(fd, req, arg)                                                           \
	({                                                                                 \
		int __r = ioctl((fd), (req), (arg));                                       \
		if (__r < 0)                                                               \
			unit_fail(__FILE__, __LINE__, "%s: %s", #req, strerror(errno));    \
		__r;                                                               \
	})

static void set_ctrl(struct tvm *t, uint32_t base, uint32_t count)
{
	memcpy(gpa_to_hva(&t->mem, CTRL_BASE_GPA, 4), &base, 4);
	memcpy(gpa_to_hva(&t->mem, CTRL_COUNT_GPA, 4), &count, 4);
}

static uint32_t counter(struct tvm *t)
{
	uint32_t v;

	memcpy(&v, gpa_to_hva(&t->mem, COUNTER_GPA, 4), 4);
	return v;
}

/* Page index in the mapping (what dirty_sync reports) of a guest address. */
static uint64_t page_of(struct tvm *t, uint64_t gpa)
{
	return guest_mem_offset(&t->mem, gpa) >> GUEST_PAGE_SHIFT;
}

static int set_cpuid(struct tvm *t)
{
	for (unsigned nent = 128; nent <= 4096; nent *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		int rc;

		if (!c)
			return -1;
		c->nent = nent;
		rc = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (rc == 0)
			rc = TEST_IOCTL(t->vcpu_fd, KVM_SET_CPUID2, c);
		free(c);
		if (rc == 0 || errno != E2BIG)
			return rc;
	}
	return -1;
}

/* Flat 32-bit protected mode at 0x1000, interrupts off. The segment
 * registers are set directly: the guest never loads one, so it needs no GDT. */
static int set_regs(struct tvm *t)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 2 };
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 0xb, .present = 1,
		.db = 1, .s = 1, .g = 1,
	};
	struct kvm_segment data = code;

	data.selector = 0x10;
	data.type = 0x3;
	if (TEST_IOCTL(t->vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		return -1;
	sregs.cr0 |= 1; /* PE */
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	if (TEST_IOCTL(t->vcpu_fd, KVM_SET_SREGS, &sregs) < 0 ||
	    TEST_IOCTL(t->vcpu_fd, KVM_SET_REGS, &regs) < 0)
		return -1;
	return 0;
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

/* 0, 1 (skip: no ring here) or -1. */
static int tvm_create(struct tvm *t, uint32_t ring_entries)
{
	uint64_t idmap = IDENTITY_MAP_GPA;
	char err[256];
	int mmap_size, rc;

	memset(t, 0, sizeof(*t));
	t->fd = t->vcpu_fd = -1;
	t->fd = TEST_IOCTL(kvm_fd, KVM_CREATE_VM, 0);
	if (t->fd < 0)
		return -1;
	/* Right after KVM_CREATE_VM, as KVM's API asks (and vm.c does). */
	rc = enable_ring(t, ring_entries);
	if (rc)
		return rc;
	if (TEST_IOCTL(t->fd, KVM_SET_TSS_ADDR, TSS_GPA) < 0 ||
	    TEST_IOCTL(t->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 ||
	    TEST_IOCTL(t->fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return -1;
	if (guest_mem_alloc(&t->mem, MEM_SIZE) || guest_mem_dirty_alloc(&t->mem)) {
		unit_fail(__FILE__, __LINE__, "cannot allocate guest memory");
		return -1;
	}
	t->mem.nregions = 2;
	t->mem.regions[0].size = SLOT_SIZE;
	t->mem.regions[1] = (struct mem_region){
		.gpa = SLOT1_GPA, .size = SLOT_SIZE, .offset = SLOT_SIZE,
		.hva = t->mem.base + SLOT_SIZE,
	};
	for (unsigned i = 0; i < t->mem.nregions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = i, .guest_phys_addr = t->mem.regions[i].gpa,
			.memory_size = t->mem.regions[i].size,
			.userspace_addr = (uintptr_t)t->mem.regions[i].hva,
		};

		if (TEST_IOCTL(t->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return -1;
	}
	memcpy(gpa_to_hva(&t->mem, CODE_GPA, sizeof(guest_code)), guest_code, sizeof(guest_code));
	t->vcpu_fd = TEST_IOCTL(t->fd, KVM_CREATE_VCPU, 0);
	mmap_size = TEST_IOCTL(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (t->vcpu_fd < 0 || mmap_size <= 0 || set_cpuid(t) < 0)
		return -1;
	t->run_size = (size_t)mmap_size;
	t->run = mmap(NULL, t->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, t->vcpu_fd, 0);
	if (t->run == MAP_FAILED) {
		t->run = NULL;
		unit_fail(__FILE__, __LINE__, "mmap kvm_run: %s", strerror(errno));
		return -1;
	}
	if (dirty_ring_map(&t->ring, t->vcpu_fd, t->rings.entries, err, sizeof(err))) {
		unit_fail(__FILE__, __LINE__, "%s", err);
		return -1;
	}
	t->rings.ring = &t->ring;
	t->rings.n = 1;
	printf("INFO: dirty ring of %u entries\n", t->rings.entries);
	return set_regs(t);
}

static void tvm_destroy(struct tvm *t)
{
	dirty_ring_destroy(&t->ring);
	if (t->run)
		munmap(t->run, t->run_size);
	if (t->vcpu_fd >= 0)
		close(t->vcpu_fd);
	if (t->fd >= 0)
		close(t->fd);
	guest_mem_free(&t->mem);
}

/* One guest iteration: KVM_RUN until the OUT; a full ring on the way is
 * harvested and reset as vcpu.c does it. The OUT's byte, or -1 (with the
 * reason in t->error: this runs on other threads too). */
static int run_once(struct tvm *t)
{
	for (;;) {
		int rc = ioctl(t->vcpu_fd, KVM_RUN, 0), n;

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			snprintf(t->error, sizeof(t->error), "KVM_RUN: %s", strerror(errno));
			return -1;
		}
		if (t->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
			t->full_exits++;
			n = dirty_ring_collect(&t->ring, t->fd, &t->mem, t->mem.dirty, NULL);
			if (n < 0) {
				snprintf(t->error, sizeof(t->error), "KVM_RESET_DIRTY_RINGS: %s",
					 strerror(-n));
				return -1;
			}
			continue;
		}
		if (t->run->exit_reason != KVM_EXIT_IO || t->run->io.port != GUEST_PORT ||
		    t->run->io.direction != KVM_EXIT_IO_OUT || t->run->io.size != 1) {
			struct kvm_regs regs = { 0 };

			ioctl(t->vcpu_fd, KVM_GET_REGS, &regs);
			snprintf(t->error, sizeof(t->error),
				 "unexpected exit %u (port %#x) at rip %#llx", t->run->exit_reason,
				 t->run->io.port, (unsigned long long)regs.rip);
			return -1;
		}
		return ((uint8_t *)t->run)[t->run->io.data_offset];
	}
}

static int run_iterations(struct tvm *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (run_once(t) < 0) {
			unit_fail(__FILE__, __LINE__, "%s", t->error);
			return -1;
		}
	}
	return 0;
}

/* Checks that the dirty pages are exactly the expected ones. */
static void check_dirty_set(const char *what, const struct bitmap *got, const struct bitmap *want)
{
	char line[512];
	size_t len = 0;

	for (uint64_t p = 0; p < got->nbits && len < sizeof(line) - 40; p++)
		if (bitmap_test(got, p) != bitmap_test(want, p))
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s%#llx",
						bitmap_test(got, p) ? "+" : "-",
						(unsigned long long)p);
	if (len)
		unit_fail(__FILE__, __LINE__, "%s: dirty pages differ (+ unexpected, - missing):%s",
			  what, line);
}

static int sync_into(struct dirty_log *d, struct bitmap *b)
{
	char err[256];
	int rc;

	bitmap_clear_all(b);
	rc = dirty_sync(d, b, err, sizeof(err));
	if (rc)
		unit_fail(__FILE__, __LINE__, "dirty_sync: %s", err);
	return rc;
}

/* The pages the guest writes with ctrl (base, count), and page 0. */
static void expect_writes(struct tvm *t, struct bitmap *want, uint32_t base, uint32_t count)
{
	bitmap_clear_all(want);
	bitmap_set(want, page_of(t, COUNTER_GPA));
	for (uint32_t i = 0; i < count; i++)
		bitmap_set(want, page_of(t, base + i * 4096ULL));
}

/* The guest runs once before logging starts, so the code page is mapped
 * already (KVM logs a page it maps into a logged slot, even to read it). */
static int warm_up(struct tvm *t)
{
	set_ctrl(t, 0, 0);
	if (run_iterations(t, 1))
		return -1;
	memset(gpa_to_hva(&t->mem, COUNTER_GPA, 4), 0, 4);
	return 0;
}

static void test_ring_sync(void)
{
	struct dirty_log d;
	struct bitmap b, want;
	struct tvm t;
	char err[256];
	int rc;

	rc = tvm_create(&t, 4096);
	if (rc == 1) {
		tvm_destroy(&t);
		return;
	}
	REQUIRE(rc == 0 && warm_up(&t) == 0);
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
	if (rc == 1) {
		tvm_destroy(&t);
		return;
	}
	REQUIRE(rc == 0 && warm_up(&t) == 0);
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
		if (run_once(m->t) < 0) {
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
	if (rc == 1) {
		tvm_destroy(&t);
		return;
	}
	REQUIRE(rc == 0 && warm_up(&t) == 0);
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
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		printf("FAIL: %s/open (/dev/kvm: %s)\n", unit_binary, strerror(errno));
		return 1;
	}
	RUN(test_ring_sync);
	RUN(test_ring_full);
	RUN(test_ring_no_lost_write);
	close(kvm_fd);
	return unit_done();
}
