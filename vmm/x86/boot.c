/* Linux x86-64 boot protocol loader; see boot.h. */
#include "boot.h"

#include <asm/bootparam.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "e820.h"

#define SETUP_HDR_OFFSET 0x1f1
#define HDRS_MAGIC 0x53726448 /* "HdrS" */
#define BOOT_FLAG_MAGIC 0xAA55
#define ENTRY64_OFFSET 0x200

static uint32_t le32_at(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16_at(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int bzimage_parse(const uint8_t *img, size_t size, struct bzimage_info *info, const char **why)
{
	uint8_t setup_sects, loadflags;
	uint16_t xloadflags;

	memset(info, 0, sizeof(*info));
	if (size < 0x268) {
		*why = "file too small to be a bzImage";
		return -ENOEXEC;
	}
	if (le16_at(img + 0x1fe) != BOOT_FLAG_MAGIC || le32_at(img + 0x202) != HDRS_MAGIC) {
		*why = "not a bzImage (no boot sector signature or HdrS header)";
		return -ENOEXEC;
	}
	info->version = le16_at(img + 0x206);
	if (info->version < 0x020c) {
		*why = "boot protocol older than 2.12 (no 64-bit entry point)";
		return -ENOEXEC;
	}
	loadflags = img[0x211];
	xloadflags = le16_at(img + 0x236);
	if (!(loadflags & LOADED_HIGH) || !(xloadflags & XLF_KERNEL_64)) {
		*why = "kernel has no 64-bit entry point (not an x86-64 bzImage)";
		return -ENOEXEC;
	}
	setup_sects = img[0x1f1] ? img[0x1f1] : 4;
	info->setup_bytes = (setup_sects + 1u) * 512u;
	if (info->setup_bytes >= size) {
		*why = "bzImage is truncated (setup sectors extend past the end)";
		return -ENOEXEC;
	}
	info->kernel_offset = info->setup_bytes;
	info->kernel_size = size - info->setup_bytes;
	/* syssize counts 16-byte paragraphs of the protected-mode kernel. */
	if ((uint64_t)le32_at(img + 0x1f4) * 16 > info->kernel_size) {
		*why = "bzImage is truncated (shorter than its header says)";
		return -ENOEXEC;
	}
	info->initrd_addr_max = le32_at(img + 0x22c);
	info->cmdline_max = le32_at(img + 0x238);
	info->init_size = le32_at(img + 0x260);
	info->relocatable = img[0x234] != 0;
	info->pref_address = (uint64_t)le32_at(img + 0x258) | (uint64_t)le32_at(img + 0x25c) << 32;
	return 0;
}

static int place_initrd(const struct guest_mem *mem, const struct bzimage_info *info,
			uint64_t kernel_end, size_t initrd_size, uint64_t *gpa)
{
	uint64_t top = guest_mem_low_end(mem);

	if ((uint64_t)info->initrd_addr_max + 1 < top)
		top = (uint64_t)info->initrd_addr_max + 1;
	if (initrd_size > top || ((top - initrd_size) & ~0xfffULL) < kernel_end)
		return -ENOMEM;
	*gpa = (top - initrd_size) & ~0xfffULL;
	return 0;
}

static int fill_zero_page(struct guest_mem *mem, struct boot_params *bp, const uint8_t *kernel,
			  uint64_t initrd_gpa, size_t initrd_size)
{
	size_t hdr_len = 0x202 + kernel[0x201] - SETUP_HDR_OFFSET;
	int n;

	memset(bp, 0, sizeof(*bp));
	if (hdr_len > sizeof(bp->hdr))
		hdr_len = sizeof(bp->hdr);
	memcpy(&bp->hdr, kernel + SETUP_HDR_OFFSET, hdr_len);
	bp->hdr.type_of_loader = 0xff;
	bp->hdr.code32_start = BOOT_KERNEL_GPA;
	bp->hdr.cmd_line_ptr = BOOT_CMDLINE_GPA;
	bp->hdr.ramdisk_image = (uint32_t)initrd_gpa;
	bp->hdr.ramdisk_size = (uint32_t)initrd_size;
	n = e820_build(mem, bp->e820_table, E820_MAX_ENTRIES_ZEROPAGE);
	if (n < 0)
		return n;
	bp->e820_entries = (uint8_t)n;
	return 0;
}

int boot_load(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_size,
	      const uint8_t *initrd, size_t initrd_size, const char *cmdline,
	      struct boot_entry *entry, char *err, size_t errlen)
{
	struct bzimage_info info;
	const char *why;
	uint64_t need, kernel_end, initrd_gpa = 0;
	size_t cmdline_len = strlen(cmdline);
	struct boot_params *bp;
	char *cmdline_dst;
	uint8_t *dst;
	int rc;

	rc = bzimage_parse(kernel, kernel_size, &info, &why);
	if (rc) {
		snprintf(err, errlen, "kernel: %s", why);
		return rc;
	}
	/* A kernel that cannot relocate decompresses itself to pref_address,
	 * wherever we load it, and needs init_size bytes from there. */
	kernel_end = (!info.relocatable && info.pref_address > BOOT_KERNEL_GPA ? info.pref_address
									       : BOOT_KERNEL_GPA) +
		     info.init_size;
	if (kernel_end < BOOT_KERNEL_GPA + info.kernel_size)
		kernel_end = BOOT_KERNEL_GPA + info.kernel_size;
	need = kernel_end - BOOT_KERNEL_GPA;
	dst = gpa_to_hva(mem, BOOT_KERNEL_GPA, info.kernel_size);
	if (!dst || !gpa_to_hva(mem, BOOT_KERNEL_GPA, need)) {
		snprintf(err, errlen, "kernel does not fit in guest memory (needs %llu MiB above 1 MiB)",
			 (unsigned long long)(need >> 20) + 1);
		return -ENOMEM;
	}
	if (cmdline_len > info.cmdline_max || cmdline_len >= BOOT_CMDLINE_MAX) {
		snprintf(err, errlen, "kernel command line too long (%zu bytes, at most %u)",
			 cmdline_len, info.cmdline_max);
		return -E2BIG;
	}
	if (initrd && place_initrd(mem, &info, kernel_end, initrd_size, &initrd_gpa)) {
		snprintf(err, errlen, "initrd (%zu bytes) does not fit in guest memory beside the kernel",
			 initrd_size);
		return -ENOMEM;
	}
	bp = gpa_to_hva(mem, BOOT_PARAMS_GPA, sizeof(*bp));
	cmdline_dst = gpa_to_hva(mem, BOOT_CMDLINE_GPA, cmdline_len + 1);
	if (!bp || !cmdline_dst) {
		snprintf(err, errlen, "guest memory too small for the boot parameters");
		return -ENOMEM;
	}
	rc = fill_zero_page(mem, bp, kernel, initrd_gpa, initrd ? initrd_size : 0);
	if (rc) {
		snprintf(err, errlen, "e820 map does not fit in the zero page");
		return rc;
	}
	memcpy(dst, kernel + info.kernel_offset, info.kernel_size);
	memcpy(cmdline_dst, cmdline, cmdline_len + 1);
	if (initrd)
		memcpy(gpa_to_hva(mem, initrd_gpa, initrd_size), initrd, initrd_size);
	entry->rip = BOOT_KERNEL_GPA + ENTRY64_OFFSET;
	entry->rsi = BOOT_PARAMS_GPA;
	return 0;
}
