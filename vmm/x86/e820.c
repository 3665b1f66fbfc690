/* e820 map construction; see e820.h. */
#include "e820.h"

#include <errno.h>

#include "boot.h"

static int add(struct boot_e820_entry *tbl, unsigned max, unsigned *n, uint64_t addr,
	       uint64_t size, uint32_t type)
{
	if (!size)
		return 0;
	if (*n == max)
		return -ENOSPC;
	tbl[*n].addr = addr;
	tbl[*n].size = size;
	tbl[*n].type = type;
	(*n)++;
	return 0;
}

int e820_build(const struct guest_mem *mem, struct boot_e820_entry *tbl, unsigned max)
{
	uint64_t low_end = guest_mem_low_end(mem);
	unsigned n = 0;
	int rc = 0;

	/* The EBDA and the BIOS area (where the MP table lives) are not RAM. */
	rc |= add(tbl, max, &n, 0, BOOT_EBDA_GPA, E820_RAM);
	rc |= add(tbl, max, &n, BOOT_EBDA_GPA, BOOT_KERNEL_GPA - BOOT_EBDA_GPA, E820_RESERVED);
	rc |= add(tbl, max, &n, BOOT_KERNEL_GPA, low_end - BOOT_KERNEL_GPA, E820_RAM);
	if (mem->nregions > 1)
		rc |= add(tbl, max, &n, mem->regions[1].gpa, mem->regions[1].size, E820_RAM);
	return rc ? -ENOSPC : (int)n;
}
