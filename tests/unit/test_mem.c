/* guest_mem_layout and gpa_to_hva: the RAM layout around the MMIO hole and
 * the one checked guest-to-host address translation. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "tests/unit/unit.h"
#include "vmm/mem.h"
#include "vmm/util.h"

static void test_layout_small(void)
{
	struct guest_mem mem;
	uint8_t *buf = malloc(1 * MiB);

	REQUIRE(buf);
	guest_mem_layout(&mem, buf, 1 * MiB);
	CHECK(mem.base == buf);
	CHECK_EQ(mem.size, 1 * MiB);
	CHECK_EQ(mem.nregions, 1);
	CHECK_EQ(mem.regions[0].gpa, 0);
	CHECK_EQ(mem.regions[0].size, 1 * MiB);
	CHECK(mem.regions[0].hva == buf);
	CHECK_EQ(guest_mem_low_end(&mem), 1 * MiB);
	free(buf);

	guest_mem_layout(&mem, NULL, 256 * MiB);
	CHECK(mem.base == NULL);
	CHECK_EQ(mem.size, 256 * MiB);
	CHECK_EQ(mem.nregions, 1);
	CHECK_EQ(mem.regions[0].gpa, 0);
	CHECK_EQ(mem.regions[0].size, 256 * MiB);
	CHECK(mem.regions[0].hva == NULL);
	CHECK_EQ(guest_mem_low_end(&mem), 256 * MiB);

	/* Exactly up to the hole: still one region. */
	guest_mem_layout(&mem, NULL, MMIO_HOLE_START);
	CHECK_EQ(mem.nregions, 1);
	CHECK_EQ(mem.regions[0].size, MMIO_HOLE_START);
}

static void test_layout_split(void)
{
	struct guest_mem mem;

	guest_mem_layout(&mem, NULL, 4 * GiB);
	CHECK_EQ(mem.size, 4 * GiB);
	CHECK_EQ(mem.nregions, 2);
	CHECK_EQ(mem.regions[0].gpa, 0);
	CHECK_EQ(mem.regions[0].size, 0xC0000000ULL);
	CHECK_EQ(mem.regions[0].gpa + mem.regions[0].size, MMIO_HOLE_START);
	CHECK_EQ(mem.regions[1].gpa, 4 * GiB);
	CHECK_EQ(mem.regions[1].gpa, MMIO_HOLE_END);
	CHECK_EQ(mem.regions[1].size, 1 * GiB);
	CHECK(mem.regions[1].hva == NULL);
	CHECK_EQ(guest_mem_low_end(&mem), MMIO_HOLE_START);

	/* One MiB over the hole start. */
	guest_mem_layout(&mem, NULL, MMIO_HOLE_START + MiB);
	CHECK_EQ(mem.nregions, 2);
	CHECK_EQ(mem.regions[0].size, MMIO_HOLE_START);
	CHECK_EQ(mem.regions[1].gpa, MMIO_HOLE_END);
	CHECK_EQ(mem.regions[1].size, MiB);
}

static void test_translate_small(void)
{
	const uint64_t size = 2 * MiB;
	struct guest_mem mem;
	uint8_t *buf = malloc(size);

	REQUIRE(buf);
	guest_mem_layout(&mem, buf, size);
	/* In range. */
	CHECK(gpa_to_hva(&mem, 0, 1) == buf);
	CHECK(gpa_to_hva(&mem, 0x1234, 16) == buf + 0x1234);
	CHECK(gpa_to_hva(&mem, 0, size) == buf);
	CHECK(gpa_to_hva(&mem, size - 1, 1) == buf + size - 1);
	CHECK(gpa_to_hva(&mem, size - 8, 8) == buf + size - 8);
	/* Crossing the end, or wholly past it. */
	CHECK(gpa_to_hva(&mem, size - 8, 9) == NULL);
	CHECK(gpa_to_hva(&mem, 0, size + 1) == NULL);
	CHECK(gpa_to_hva(&mem, size, 1) == NULL);
	CHECK(gpa_to_hva(&mem, size + 4096, 16) == NULL);
	CHECK(gpa_to_hva(&mem, 4 * GiB, 16) == NULL);
	/* len 0 is checked as len 1. */
	CHECK(gpa_to_hva(&mem, 0x10, 0) == buf + 0x10);
	CHECK(gpa_to_hva(&mem, size - 1, 0) == buf + size - 1);
	CHECK(gpa_to_hva(&mem, size, 0) == NULL);
	/* gpa + len overflows. */
	CHECK(gpa_to_hva(&mem, UINT64_MAX, 0) == NULL);
	CHECK(gpa_to_hva(&mem, UINT64_MAX, 1) == NULL);
	CHECK(gpa_to_hva(&mem, UINT64_MAX - 3, 8) == NULL);
	CHECK(gpa_to_hva(&mem, 0x10, UINT64_MAX) == NULL);
	CHECK(gpa_to_hva(&mem, 0, UINT64_MAX) == NULL);
	CHECK(gpa_to_hva(&mem, 1, UINT64_MAX) == NULL);
	free(buf);
}

/* The hole can only be told apart from RAM with real host pointers, so this
 * maps 3 GiB + 2 MiB of address space (MAP_NORESERVE: nothing is touched). */
static void test_translate_hole(void)
{
	const uint64_t size = MMIO_HOLE_START + 2 * MiB;
	struct guest_mem mem;
	uint8_t *base;
	int rc = guest_mem_alloc(&mem, size);

	CHECK_EQ(rc, 0);
	if (rc)
		return;
	base = mem.base;
	REQUIRE(base != NULL);
	CHECK_EQ(mem.nregions, 2);
	CHECK(mem.regions[0].hva == base);
	CHECK(mem.regions[1].hva == base + MMIO_HOLE_START);

	CHECK(gpa_to_hva(&mem, MMIO_HOLE_START - 16, 16) == base + MMIO_HOLE_START - 16);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_START - 8, 16) == NULL); /* runs into the hole */
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_START, 1) == NULL);
	CHECK(gpa_to_hva(&mem, 0xFEC00000ULL, 4) == NULL); /* IOAPIC */
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END - 1, 1) == NULL);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END - 8, 16) == NULL); /* runs out of the hole */
	/* One request may not span both regions even though they are one mapping. */
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_START - 8, MMIO_HOLE_END - MMIO_HOLE_START + 16) == NULL);
	CHECK(gpa_to_hva(&mem, 0, size) == NULL);

	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END, 1) == base + MMIO_HOLE_START);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END + 0x1000, 0) == base + MMIO_HOLE_START + 0x1000);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END, 2 * MiB) == base + MMIO_HOLE_START);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END + 2 * MiB - 1, 1) == base + size - 1);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END + 2 * MiB - 1, 2) == NULL);
	CHECK(gpa_to_hva(&mem, MMIO_HOLE_END + 2 * MiB, 1) == NULL);

	guest_mem_free(&mem);
	CHECK(mem.base == NULL);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_layout_small);
	RUN(test_layout_split);
	RUN(test_translate_small);
	RUN(test_translate_hole);
	return unit_done();
}
