/* Uncompressed ELF vmlinux images, as Firecracker and Cloud Hypervisor boot
 * them: the PT_LOAD segments go to their physical addresses and the vCPU
 * enters e_entry (the kernel's startup_64) in long mode with RSI pointing
 * at the zero page, exactly as for a bzImage's 64-bit entry. Skipping the
 * bzImage's self-decompression saves the guest a few hundred milliseconds
 * natively and seconds under emulation. */
#ifndef VMM_X86_VMLINUX_H
#define VMM_X86_VMLINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMLINUX_MAX_SEGMENTS 16

struct vmlinux_segment {
	uint64_t offset;  /* in the file */
	uint64_t paddr;   /* guest-physical load address */
	uint64_t filesz;  /* bytes copied from the file */
	uint64_t memsz;   /* bytes occupied in memory; the rest is zero */
};

struct vmlinux_info {
	uint64_t entry;    /* guest-physical entry point */
	uint64_t low, end; /* lowest and one past the highest loaded address */
	unsigned nsegs;
	struct vmlinux_segment segs[VMLINUX_MAX_SEGMENTS];
};

/* Whether the image starts with the ELF magic (and so is not a bzImage). */
bool vmlinux_is_elf(const uint8_t *img, size_t size);
/* Checks an x86-64 ELF executable and collects its loadable segments:
 * headers inside the file, segment ranges without overflow, no segment
 * below min_paddr, the entry inside a loaded segment. 0, or -ENOEXEC with
 * a reason in *why. Pure: no guest memory involved, so it can be fuzzed. */
int vmlinux_parse(const uint8_t *img, size_t size, uint64_t min_paddr, struct vmlinux_info *info,
		  const char **why);

#endif
