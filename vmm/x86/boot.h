/* x86-64 Linux boot protocol: parse a bzImage, place kernel, command line
 * and initrd in guest memory, and fill the boot parameters ("zero page").
 * The vCPU then enters the kernel's 64-bit entry point in long mode with
 * RSI pointing at the zero page (Documentation/x86/boot.rst). */
#ifndef VMM_X86_BOOT_H
#define VMM_X86_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../mem.h"

/* Guest-physical layout of everything the loader writes below 1 MiB. */
#define BOOT_GDT_GPA      0x500ULL
#define BOOT_PARAMS_GPA   0x7000ULL
#define BOOT_PML4_GPA     0x9000ULL /* then PDPT, then 4 page directories */
#define BOOT_CMDLINE_GPA  0x20000ULL
#define BOOT_CMDLINE_MAX  0x10000ULL
#define BOOT_EBDA_GPA     0x9fc00ULL
#define BOOT_BIOS_GPA     0xf0000ULL /* MP table; reserved up to 1 MiB */
#define BOOT_KERNEL_GPA   0x100000ULL

struct bzimage_info {
	uint16_t version;
	uint32_t setup_bytes;     /* real-mode part, boot sector included */
	uint64_t kernel_offset;   /* file offset of the protected-mode kernel */
	uint64_t kernel_size;
	uint32_t init_size;       /* memory the kernel needs from its load address */
	uint32_t cmdline_max;     /* longest command line, NUL excluded */
	uint32_t initrd_addr_max; /* highest address the initrd may occupy */
	bool relocatable;
	uint64_t pref_address;    /* where a non-relocatable kernel decompresses */
};

/* 0, or -ENOEXEC with a human-readable reason in *why. */
int bzimage_parse(const uint8_t *img, size_t size, struct bzimage_info *info, const char **why);

struct boot_entry {
	uint64_t rip;
	uint64_t rsi;
};

/* Loads kernel image bytes (and optionally initrd bytes) into mem, builds
 * the zero page with the e820 map, and returns the entry point.
 * On error returns a negative errno and writes a one-line reason to err. */
int boot_load(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_size,
	      const uint8_t *initrd, size_t initrd_size, const char *cmdline,
	      struct boot_entry *entry, char *err, size_t errlen);

#endif
