/* vmm/dirty_ring.c without KVM: harvesting rings in memory, filled the way
 * KVM fills them (slot and offset, then DIRTY with a release store), and
 * reset the way KVM_RESET_DIRTY_RINGS resets them. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/dirty_ring.h"
#include "vmm/mem.h"
#include "vmm/util.h"

#define DIRTY KVM_DIRTY_GFN_F_DIRTY
#define RESET KVM_DIRTY_GFN_F_RESET

/* What KVM does when a vCPU dirties a page. */
static void push(struct kvm_dirty_gfn *g, uint32_t slot, uint64_t offset)
{
	g->slot = slot;
	g->offset = offset;
	__atomic_store_n(&g->flags, DIRTY, __ATOMIC_RELEASE);
}

/* What KVM_RESET_DIRTY_RINGS does to one ring: frees the harvested
 * entries from reset_index on, in order. Returns how many. */
static uint32_t fake_reset(struct kvm_dirty_gfn *gfns, uint32_t entries, uint32_t *reset_index)
{
	uint32_t n = 0;

	while (__atomic_load_n(&gfns[*reset_index & (entries - 1)].flags, __ATOMIC_ACQUIRE) & RESET) {
		__atomic_store_n(&gfns[*reset_index & (entries - 1)].flags, 0, __ATOMIC_RELAXED);
		(*reset_index)++;
		n++;
	}
	return n;
}

static bool bit(const _Atomic uint64_t *bits, uint64_t page)
{
	return atomic_load(&bits[page / 64]) >> (page % 64) & 1;
}

static uint64_t count_bits(const _Atomic uint64_t *bits, uint64_t npages)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < (npages + 63) / 64; w++)
		n += (uint64_t)__builtin_popcountll(atomic_load(&bits[w]));
	return n;
}

/* A ring of `entries` over g, on the layout of ram bytes of RAM (no
 * memory behind it: a harvest only reads the layout), and a bitmap for its
 * pages to harvest into; NULL if either cannot be had. */
static _Atomic uint64_t *ring_setup(struct dirty_ring *r, struct kvm_dirty_gfn *g,
				    uint32_t entries, struct guest_mem *mem, uint64_t ram)
{
	_Atomic uint64_t *bits;

	guest_mem_layout(mem, NULL, ram);
	bits = calloc((guest_mem_pages(mem) + 63) / 64, sizeof(uint64_t));
	if (bits && dirty_ring_init(r, g, entries)) {
		free((void *)bits);
		return NULL;
	}
	return bits;
}

static void ring_teardown(struct dirty_ring *r, _Atomic uint64_t *bits)
{
	dirty_ring_destroy(r);
	free((void *)bits);
}

static void test_entries_valid(void)
{
	CHECK(dirty_ring_entries_valid(256));
	CHECK(dirty_ring_entries_valid(4096));
	CHECK(dirty_ring_entries_valid(65536));
	CHECK(!dirty_ring_entries_valid(0));
	CHECK(!dirty_ring_entries_valid(128));
	CHECK(!dirty_ring_entries_valid(3000));
	CHECK(!dirty_ring_entries_valid(4097));
	CHECK(!dirty_ring_entries_valid(131072));
	CHECK(!dirty_ring_entries_valid(1ULL << 32));
}

static void test_init(void)
{
	struct kvm_dirty_gfn g[8] = { { 0 } };
	struct dirty_ring r;

	CHECK_EQ(dirty_ring_init(&r, g, 6), -EINVAL);
	CHECK_EQ(dirty_ring_init(&r, g, 0), -EINVAL);
	CHECK_EQ(dirty_ring_init(&r, NULL, 8), -EINVAL);
	dirty_ring_destroy(&r); /* never initialised: nothing to do */
	REQUIRE(dirty_ring_init(&r, g, 8) == 0);
	CHECK(r.fetch == 0 && r.entries == 8 && !r.mapped && !r.harvested && !r.ignored);
	dirty_ring_destroy(&r);
	CHECK(r.gfns == NULL && r.entries == 0);
}

/* Slot i is mem->regions[i]; its pages start at the region's offset in the
 * mapping, not at its guest physical address. */
static void test_page_of_slot_offset(void)
{
	struct guest_mem mem;
	uint64_t low = MMIO_HOLE_START >> GUEST_PAGE_SHIFT;

	/* 3 GiB below the hole, 1 GiB + 1 MiB (262400 pages) from 4 GiB on. */
	guest_mem_layout(&mem, NULL, (4ULL << 30) + (1ULL << 20));
	REQUIRE(mem.nregions == 2);
	CHECK_EQ(dirty_ring_page(&mem, 0, 0), 0);
	CHECK_EQ(dirty_ring_page(&mem, 0, low - 1), low - 1);
	CHECK_EQ(dirty_ring_page(&mem, 0, low), UINT64_MAX);
	CHECK_EQ(dirty_ring_page(&mem, 1, 0), low);
	CHECK_EQ(dirty_ring_page(&mem, 1, 262400 - 1), guest_mem_pages(&mem) - 1);
	CHECK_EQ(dirty_ring_page(&mem, 1, 262400), UINT64_MAX);
	CHECK_EQ(dirty_ring_page(&mem, 1, UINT64_MAX), UINT64_MAX);
	CHECK_EQ(dirty_ring_page(&mem, 2, 0), UINT64_MAX);
	CHECK_EQ(dirty_ring_page(&mem, 1u << 16, 0), UINT64_MAX); /* SMM's address space */
	CHECK_EQ(dirty_ring_page(&mem, UINT32_MAX, 0), UINT64_MAX);
}

static void test_harvest_stops_at_first_not_dirty(void)
{
	struct kvm_dirty_gfn g[8] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;
	_Atomic uint64_t *bits;

	bits = ring_setup(&r, g, 8, &mem, 64ULL << 20);
	REQUIRE(bits);
	push(&g[0], 0, 5);
	push(&g[1], 0, 64);
	push(&g[2], 0, 5); /* twice: once set */
	push(&g[4], 0, 99); /* after a free entry: not reached */
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 3);
	CHECK_EQ(r.fetch, 3);
	CHECK_EQ(r.harvested, 3);
	CHECK(g[0].flags == RESET && g[1].flags == RESET && g[2].flags == RESET);
	CHECK_EQ(g[3].flags, 0);
	CHECK_EQ(g[4].flags, DIRTY);
	CHECK(bit(bits, 5) && bit(bits, 64) && !bit(bits, 99));
	CHECK_EQ(count_bits(bits, guest_mem_pages(&mem)), 2);
	/* Nothing new: nothing taken, the fetch index stays. */
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 0);
	CHECK_EQ(r.fetch, 3);
	/* KVM fills the gap; both are taken now, in order. */
	push(&g[3], 0, 7);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 2);
	CHECK_EQ(r.fetch, 5);
	CHECK(bit(bits, 7) && bit(bits, 99));
	/* An entry already harvested (1X, not reset yet) is not dirty. */
	g[5].flags = RESET | DIRTY;
	g[5].offset = 200;
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 0);
	CHECK(!bit(bits, 200));
	g[5].flags = RESET;
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 0);
	CHECK_EQ(r.fetch, 5);
	ring_teardown(&r, bits);
}

/* The fetch index runs on past the ring size (the slot is index % size),
 * and past UINT32_MAX too. */
static void test_harvest_wraps(void)
{
	struct kvm_dirty_gfn g[8] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;
	_Atomic uint64_t *bits;
	uint32_t reset_index = 0;

	bits = ring_setup(&r, g, 8, &mem, 64ULL << 20);
	REQUIRE(bits);
	for (unsigned i = 0; i < 6; i++)
		push(&g[i], 0, i);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 6);
	CHECK_EQ(fake_reset(g, 8, &reset_index), 6);
	/* Entries 6, 7, then 0, 1 of the next lap. */
	push(&g[6], 0, 1000);
	push(&g[7], 0, 1001);
	push(&g[0], 0, 1002);
	push(&g[1], 0, 1003);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 4);
	CHECK_EQ(r.fetch, 10);
	CHECK(bit(bits, 1000) && bit(bits, 1001) && bit(bits, 1002) && bit(bits, 1003));
	CHECK_EQ(g[2].flags, 0);
	CHECK_EQ(fake_reset(g, 8, &reset_index), 4);

	/* A fetch index about to wrap around 2^32. */
	memset(g, 0, sizeof(g));
	r.fetch = UINT32_MAX - 1; /* entry 6 */
	push(&g[6], 0, 2000);
	push(&g[7], 0, 2001);
	push(&g[0], 0, 2002);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 3);
	CHECK_EQ(r.fetch, 1);
	CHECK(bit(bits, 2000) && bit(bits, 2001) && bit(bits, 2002));
	CHECK(g[6].flags == RESET && g[7].flags == RESET && g[0].flags == RESET);
	ring_teardown(&r, bits);
}

/* A ring whose every entry is dirty is taken once round, no more. */
static void test_harvest_full_ring(void)
{
	struct kvm_dirty_gfn g[16] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;
	_Atomic uint64_t *bits;
	uint32_t reset_index = 0;

	bits = ring_setup(&r, g, 16, &mem, 64ULL << 20);
	REQUIRE(bits);
	r.fetch = 5;
	reset_index = 5;
	for (unsigned i = 0; i < 16; i++)
		push(&g[i], 0, 300 + i);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 16);
	CHECK_EQ(r.fetch, 21);
	CHECK_EQ(count_bits(bits, guest_mem_pages(&mem)), 16);
	for (unsigned i = 0; i < 16; i++)
		CHECK_EQ(g[i].flags, RESET);
	CHECK_EQ(fake_reset(g, 16, &reset_index), 16);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 0);
	ring_teardown(&r, bits);
}

/* Entries naming no page of RAM are consumed (the ring must move on) and
 * counted, and write nothing. */
static void test_harvest_ignores_out_of_range(void)
{
	struct kvm_dirty_gfn g[8] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;
	_Atomic uint64_t *bits;
	uint64_t npages;

	bits = ring_setup(&r, g, 8, &mem, 4ULL << 20); /* 1024 pages, one slot */
	REQUIRE(bits);
	npages = guest_mem_pages(&mem);
	push(&g[0], 1, 0);             /* no slot 1 */
	push(&g[1], 0, npages);        /* past the slot */
	push(&g[2], 1u << 16, 3);      /* another address space */
	push(&g[3], 0, UINT64_MAX);
	push(&g[4], 0, npages - 1);    /* the last page: fine */
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 5);
	CHECK_EQ(r.ignored, 4);
	CHECK_EQ(r.harvested, 5);
	CHECK_EQ(count_bits(bits, npages), 1);
	CHECK(bit(bits, npages - 1));
	for (unsigned i = 0; i < 5; i++)
		CHECK_EQ(g[i].flags, RESET);
	ring_teardown(&r, bits);
}

/* Two slots: slot 1's offsets land after slot 0's pages. */
static void test_harvest_two_slots(void)
{
	struct kvm_dirty_gfn g[4] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;
	_Atomic uint64_t *bits;
	uint64_t low = MMIO_HOLE_START >> GUEST_PAGE_SHIFT;

	bits = ring_setup(&r, g, 4, &mem, 4ULL << 30);
	REQUIRE(bits);
	push(&g[0], 1, 0);
	push(&g[1], 1, 17);
	push(&g[2], 0, low - 1);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, bits), 3);
	CHECK(bit(bits, low) && bit(bits, low + 17) && bit(bits, low - 1));
	CHECK_EQ(count_bits(bits, guest_mem_pages(&mem)), 3);
	ring_teardown(&r, bits);
}

/* With no bitmap the entries are still consumed: a vCPU whose ring fills
 * while nothing wants the pages must be able to go on. */
static void test_harvest_discard(void)
{
	struct kvm_dirty_gfn g[4] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;

	guest_mem_layout(&mem, NULL, 64ULL << 20);
	REQUIRE(dirty_ring_init(&r, g, 4) == 0);
	push(&g[0], 0, 1);
	push(&g[1], 0, 2);
	CHECK_EQ(dirty_ring_harvest(&r, &mem, NULL), 2);
	CHECK(g[0].flags == RESET && g[1].flags == RESET);
	CHECK_EQ(r.fetch, 2);
	dirty_ring_destroy(&r);
}

/* dirty_ring_collect harvests before it resets; a reset that fails (here:
 * no VM fd) is reported, the harvest stands. */
static void test_collect_reset_fails(void)
{
	struct kvm_dirty_gfn g[4] = { { 0 } };
	struct guest_mem mem;
	struct dirty_ring r;
	_Atomic uint64_t *bits;
	int reset = -1;

	bits = ring_setup(&r, g, 4, &mem, 64ULL << 20);
	REQUIRE(bits);
	push(&g[0], 0, 9);
	CHECK_EQ(dirty_ring_collect(&r, -1, &mem, bits, &reset), -EBADF);
	CHECK_EQ(reset, 0);
	CHECK(bit(bits, 9));
	CHECK_EQ(g[0].flags, RESET);
	ring_teardown(&r, bits);
}

/* ---- two harvesters and a fake KVM at once ---- */

#define RACE_PUSHES 300000u
#define RACE_ENTRIES 256u

struct race {
	struct dirty_ring ring;
	struct kvm_dirty_gfn gfns[RACE_ENTRIES];
	struct guest_mem mem;
	_Atomic uint64_t *bits;
	_Atomic uint64_t taken;
	_Atomic bool pushed_all;
	uint32_t dirty_index, reset_index;
};

/* KVM's side: pushes while the ring has room, resets what was harvested. */
static void *race_kvm(void *arg)
{
	struct race *t = arg;
	uint64_t npages = guest_mem_pages(&t->mem);

	for (uint32_t i = 0; i < RACE_PUSHES; i++) {
		while (t->dirty_index - t->reset_index >= RACE_ENTRIES)
			if (!fake_reset(t->gfns, RACE_ENTRIES, &t->reset_index))
				sched_yield();
		push(&t->gfns[t->dirty_index & (RACE_ENTRIES - 1)], 0, i % npages);
		t->dirty_index++;
	}
	atomic_store(&t->pushed_all, true);
	return NULL;
}

/* A vCPU thread or the migration: harvests under the ring's lock. */
static void *race_harvester(void *arg)
{
	struct race *t = arg;

	while (atomic_load(&t->taken) < RACE_PUSHES) {
		uint32_t n;

		pthread_mutex_lock(&t->ring.lock);
		n = dirty_ring_harvest(&t->ring, &t->mem, t->bits);
		pthread_mutex_unlock(&t->ring.lock);
		atomic_fetch_add(&t->taken, n);
		if (!n)
			sched_yield();
	}
	return NULL;
}

static void test_two_harvesters(void)
{
	struct race *t = calloc(1, sizeof(*t));
	pthread_t kvm, h1, h2;
	uint64_t npages;

	REQUIRE(t);
	t->bits = ring_setup(&t->ring, t->gfns, RACE_ENTRIES, &t->mem, 512ULL << 20);
	REQUIRE(t->bits);
	npages = guest_mem_pages(&t->mem);
	REQUIRE(thread_create(&h1, race_harvester, t) == 0);
	REQUIRE(thread_create(&h2, race_harvester, t) == 0);
	REQUIRE(thread_create(&kvm, race_kvm, t) == 0);
	pthread_join(kvm, NULL);
	pthread_join(h1, NULL);
	pthread_join(h2, NULL);
	CHECK(atomic_load(&t->pushed_all));
	/* Every entry taken exactly once, every page it named set. */
	CHECK_EQ(atomic_load(&t->taken), RACE_PUSHES);
	CHECK_EQ(t->ring.harvested, RACE_PUSHES);
	CHECK_EQ(t->ring.fetch, RACE_PUSHES);
	CHECK_EQ(t->ring.ignored, 0);
	CHECK_EQ(count_bits(t->bits, npages), RACE_PUSHES < npages ? RACE_PUSHES : npages);
	ring_teardown(&t->ring, t->bits);
	free(t);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_entries_valid);
	RUN(test_init);
	RUN(test_page_of_slot_offset);
	RUN(test_harvest_stops_at_first_not_dirty);
	RUN(test_harvest_wraps);
	RUN(test_harvest_full_ring);
	RUN(test_harvest_ignores_out_of_range);
	RUN(test_harvest_two_slots);
	RUN(test_harvest_discard);
	RUN(test_collect_reset_fails);
	RUN(test_two_harvesters);
	return unit_done();
}
