/* Linux x86-64 boot protocol loader; see boot.h. */
#include "boot.h"

#include <asm/bootparam.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "e820.h"
#include "vmlinux.h"

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

static int place_initrd(const struct guest_mem *mem, uint32_t initrd_addr_max, uint64_t kernel_end,
			size_t initrd_size, uint64_t *gpa)
{
	uint64_t top = guest_mem_low_end(mem);

	if ((uint64_t)initrd_addr_max + 1 < top)
		top = (uint64_t)initrd_addr_max + 1;
	if (initrd_size > top || ((top - initrd_size) & ~0xfffULL) < kernel_end)
		return -ENOMEM;
	*gpa = (top - initrd_size) & ~0xfffULL;
	return 0;
}

/* What the two image formats tell the common part of the loader. */
struct boot_image {
	const uint8_t *hdr;       /* bzImage setup header at 0x1f1, or NULL (ELF) */
	size_t hdr_len;
	uint64_t kernel_end;      /* first byte the kernel does not need */
	uint32_t cmdline_max;
	uint32_t initrd_addr_max;
};

/* Command line, initrd and zero page, the same for both formats. An ELF
 * vmlinux has no setup header to copy, so the fields the kernel checks
 * are filled in as a bzImage would carry them. */
static int write_boot_params(struct guest_mem *mem, const struct boot_image *img,
			     const uint8_t *initrd, size_t initrd_size, const char *cmdline,
			     char *err, size_t errlen)
{
	size_t cmdline_len = strlen(cmdline);
	uint64_t initrd_gpa = 0;
	struct boot_params *bp;
	char *cmdline_dst;
	int n;

	if (cmdline_len > img->cmdline_max || cmdline_len >= BOOT_CMDLINE_MAX) {
		snprintf(err, errlen, "kernel command line too long (%zu bytes, at most %u)",
			 cmdline_len, img->cmdline_max);
		return -E2BIG;
	}
	if (initrd && place_initrd(mem, img->initrd_addr_max, img->kernel_end, initrd_size,
				   &initrd_gpa)) {
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
	memset(bp, 0, sizeof(*bp));
	if (img->hdr) {
		memcpy(&bp->hdr, img->hdr, img->hdr_len < sizeof(bp->hdr) ? img->hdr_len : sizeof(bp->hdr));
	} else {
		bp->hdr.boot_flag = BOOT_FLAG_MAGIC;
		bp->hdr.header = HDRS_MAGIC;
		bp->hdr.version = 0x020c;
		bp->hdr.cmdline_size = img->cmdline_max;
		bp->hdr.initrd_addr_max = img->initrd_addr_max;
	}
	bp->hdr.type_of_loader = 0xff;
	bp->hdr.code32_start = BOOT_KERNEL_GPA;
	bp->hdr.cmd_line_ptr = BOOT_CMDLINE_GPA;
	bp->hdr.ramdisk_image = (uint32_t)initrd_gpa;
	bp->hdr.ramdisk_size = initrd ? (uint32_t)initrd_size : 0;
	n = e820_build(mem, bp->e820_table, E820_MAX_ENTRIES_ZEROPAGE);
	if (n < 0) {
		snprintf(err, errlen, "e820 map does not fit in the zero page");
		return n;
	}
	bp->e820_entries = (uint8_t)n;
	memcpy(cmdline_dst, cmdline, cmdline_len + 1);
	if (initrd)
		memcpy(gpa_to_hva(mem, initrd_gpa, initrd_size), initrd, initrd_size);
	return 0;
}

static int load_bzimage(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_size,
			const uint8_t *initrd, size_t initrd_size, const char *cmdline,
			struct boot_entry *entry, char *err, size_t errlen)
{
	struct bzimage_info info;
	struct boot_image img;
	const char *why;
	uint64_t need, kernel_end;
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
	img = (struct boot_image){
		.hdr = kernel + SETUP_HDR_OFFSET,
		.hdr_len = 0x202 + kernel[0x201] - SETUP_HDR_OFFSET,
		.kernel_end = kernel_end,
		.cmdline_max = info.cmdline_max,
		.initrd_addr_max = info.initrd_addr_max,
	};
	rc = write_boot_params(mem, &img, initrd, initrd_size, cmdline, err, errlen);
	if (rc)
		return rc;
	memcpy(dst, kernel + info.kernel_offset, info.kernel_size);
	entry->rip = BOOT_KERNEL_GPA + ENTRY64_OFFSET;
	entry->rsi = BOOT_PARAMS_GPA;
	return 0;
}

/* Protocol 2.06+ defaults, which a vmlinux cannot state itself. */
#define VMLINUX_CMDLINE_MAX 2047
#define VMLINUX_INITRD_ADDR_MAX 0x7fffffff

static int load_vmlinux(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_size,
			const uint8_t *initrd, size_t initrd_size, const char *cmdline,
			struct boot_entry *entry, char *err, size_t errlen)
{
	struct vmlinux_info info;
	struct boot_image img;
	const char *why;
	int rc;

	rc = vmlinux_parse(kernel, kernel_size, BOOT_KERNEL_GPA, &info, &why);
	if (rc) {
		snprintf(err, errlen, "kernel: %s", why);
		return rc;
	}
	for (unsigned i = 0; i < info.nsegs; i++)
		if (!gpa_to_hva(mem, info.segs[i].paddr, info.segs[i].memsz)) {
			snprintf(err, errlen,
				 "kernel does not fit in guest memory (it loads up to %llu MiB)",
				 (unsigned long long)((info.end + (1 << 20) - 1) >> 20));
			return -ENOMEM;
		}
	img = (struct boot_image){
		.kernel_end = info.end,
		.cmdline_max = VMLINUX_CMDLINE_MAX,
		.initrd_addr_max = VMLINUX_INITRD_ADDR_MAX,
	};
	rc = write_boot_params(mem, &img, initrd, initrd_size, cmdline, err, errlen);
	if (rc)
		return rc;
	for (unsigned i = 0; i < info.nsegs; i++) {
		const struct vmlinux_segment *s = &info.segs[i];
		uint8_t *dst = gpa_to_hva(mem, s->paddr, s->memsz);

		memcpy(dst, kernel + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	entry->rip = info.entry;
	entry->rsi = BOOT_PARAMS_GPA;
	return 0;
}

int boot_load(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_size,
	      const uint8_t *initrd, size_t initrd_size, const char *cmdline,
	      struct boot_entry *entry, char *err, size_t errlen)
{
	if (vmlinux_is_elf(kernel, kernel_size))
		return load_vmlinux(mem, kernel, kernel_size, initrd, initrd_size, cmdline, entry,
				    err, errlen);
	return load_bzimage(mem, kernel, kernel_size, initrd, initrd_size, cmdline, entry, err,
			    errlen);
}
