/* e820_build: the memory map for small and hole-splitting guests. */
#include <errno.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/mem.h"
#include "vmm/util.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/e820.h"

#define CHECK_ENTRY(e, a, s, t)                                                            \
	do {                                                                               \
		CHECK_EQ((e).addr, (a));                                                   \
		CHECK_EQ((e).size, (s));                                                   \
		CHECK_EQ((e).type, (t));                                                   \
	} while (0)

static void test_256m(void)
{
	struct boot_e820_entry tbl[8];
	struct guest_mem mem;

	memset(tbl, 0xee, sizeof(tbl));
	guest_mem_layout(&mem, NULL, 256 * MiB);
	REQUIRE(e820_build(&mem, tbl, 8) == 3);
	CHECK_ENTRY(tbl[0], 0, 0x9fc00, E820_RAM);
	CHECK_ENTRY(tbl[1], 0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED);
	CHECK_ENTRY(tbl[2], 1 * MiB, 255 * MiB, E820_RAM);
	CHECK_EQ(tbl[3].addr, 0xeeeeeeeeeeeeeeeeULL); /* nothing written past the count */
	/* Contiguous, no gaps below 1 MiB. */
	CHECK_EQ(tbl[0].addr + tbl[0].size, tbl[1].addr);
	CHECK_EQ(tbl[1].addr + tbl[1].size, tbl[2].addr);
	/* Exactly enough room. */
	CHECK_EQ(e820_build(&mem, tbl, 3), 3);
}

static void test_4g(void)
{
	struct boot_e820_entry tbl[8];
	struct guest_mem mem;

	guest_mem_layout(&mem, NULL, 4 * GiB);
	REQUIRE(e820_build(&mem, tbl, 8) == 4);
	CHECK_ENTRY(tbl[0], 0, BOOT_EBDA_GPA, E820_RAM);
	CHECK_ENTRY(tbl[1], BOOT_EBDA_GPA, BOOT_KERNEL_GPA - BOOT_EBDA_GPA, E820_RESERVED);
	CHECK_ENTRY(tbl[2], 1 * MiB, MMIO_HOLE_START - 1 * MiB, E820_RAM);
	CHECK_ENTRY(tbl[3], 4 * GiB, 1 * GiB, E820_RAM);
	CHECK_EQ(e820_build(&mem, tbl, 4), 4);

	/* Below the hole the entries tile [0, 3 GiB); with the high entry they cover 4 GiB. */
	CHECK_EQ(tbl[0].size + tbl[2].size + tbl[3].size + tbl[1].size, 4 * GiB);
}

static void test_nospc(void)
{
	struct boot_e820_entry tbl[8];
	struct guest_mem mem;

	guest_mem_layout(&mem, NULL, 256 * MiB);
	CHECK_EQ(e820_build(&mem, tbl, 2), -ENOSPC);
	CHECK_EQ(e820_build(&mem, tbl, 1), -ENOSPC);
	CHECK_EQ(e820_build(&mem, tbl, 0), -ENOSPC);
	guest_mem_layout(&mem, NULL, 4 * GiB);
	CHECK_EQ(e820_build(&mem, tbl, 3), -ENOSPC);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_256m);
	RUN(test_4g);
	RUN(test_nospc);
	return unit_done();
}
