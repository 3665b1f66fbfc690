/* Initial vCPU state for the 64-bit boot protocol: identity-mapped page
 * tables and a flat GDT in guest memory, long mode for the boot vCPU, and
 * the MSRs, FPU and LAPIC wiring every vCPU needs. */
#ifndef VMM_X86_REGS_H
#define VMM_X86_REGS_H

#include <stdbool.h>

#include "../mem.h"
#include "boot.h"

#define BOOT_IDENTITY_MAP_GIB 4

/* Writes the GDT and page tables mapping the first 4 GiB. 0 or -ENOMEM. */
int regs_write_boot_tables(struct guest_mem *mem);
/* Sets up vCPU fd. Only the boot vCPU gets entry; the others wait for the
 * guest's INIT/SIPI. 0 or -errno. */
int regs_init_vcpu(int vcpu_fd, const struct boot_entry *entry, bool boot_cpu);

#endif
