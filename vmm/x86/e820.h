/* The e820 memory map the guest sees: usable RAM around the legacy BIOS
 * area and the 32-bit MMIO hole. */
#ifndef VMM_X86_E820_H
#define VMM_X86_E820_H

#include <asm/bootparam.h>

#include "../mem.h"

#define E820_RAM      1
#define E820_RESERVED 2

/* Fills tbl; returns the number of entries or -ENOSPC. */
int e820_build(const struct guest_mem *mem, struct boot_e820_entry *tbl, unsigned max);

#endif
