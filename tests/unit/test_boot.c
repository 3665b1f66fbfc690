/* bzimage_parse and boot_load on a synthetic bzImage: header checks, where
 * kernel, command line and initrd land, and the zero page. */
#include <asm/bootparam.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/mem.h"
#include "vmm/util.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/e820.h"

#define SETUP_SECTS   4
#define SETUP_BYTES   ((SETUP_SECTS + 1) * 512)
#define KERNEL_BYTES  8192
#define IMAGE_BYTES   (SETUP_BYTES + KERNEL_BYTES)
#define INIT_SIZE     (4 * MiB)
#define CMDLINE_SIZE  255
#define HDR_END       0x268 /* the header covers [0x1f1, 0x268) */
#define GUEST_RAM     (64 * MiB)

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static uint8_t kernel_byte(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/* A minimal valid x86-64 bzImage per Documentation/x86/boot.rst. */
static void make_image(uint8_t *img)
{
	memset(img, 0, IMAGE_BYTES);
	img[0x1f1] = SETUP_SECTS;
	put32(img + 0x1f4, KERNEL_BYTES / 16); /* syssize */
	put16(img + 0x1fe, 0xAA55);
	img[0x200] = 0xeb; /* jmp short over the header */
	img[0x201] = HDR_END - 0x202;
	memcpy(img + 0x202, "HdrS", 4);
	put16(img + 0x206, 0x020f);
	img[0x211] = LOADED_HIGH;
	put32(img + 0x22c, 0x7fffffff);           /* initrd_addr_max */
	put16(img + 0x236, XLF_KERNEL_64);
	put32(img + 0x238, CMDLINE_SIZE);
	put32(img + 0x260, INIT_SIZE);
	/* kernel_info_offset at 0x268 lies past this header's end. */
	put32(img + 0x268, 0xdeadbeef);
	for (size_t i = 0; i < KERNEL_BYTES; i++)
		img[SETUP_BYTES + i] = kernel_byte(i);
}

static void test_parse_good(void)
{
	static uint8_t img[IMAGE_BYTES];
	struct bzimage_info info;
	const char *why = NULL;

	make_image(img);
	CHECK_EQ(bzimage_parse(img, sizeof(img), &info, &why), 0);
	CHECK_EQ(info.version, 0x020f);
	CHECK_EQ(info.setup_bytes, SETUP_BYTES);
	CHECK_EQ(info.kernel_offset, SETUP_BYTES);
	CHECK_EQ(info.kernel_size, KERNEL_BYTES);
	CHECK_EQ(info.init_size, INIT_SIZE);
	CHECK_EQ(info.cmdline_max, CMDLINE_SIZE);
	CHECK_EQ(info.initrd_addr_max, 0x7fffffff);

	/* setup_sects 0 means 4; a file longer than syssize says is fine. */
	img[0x1f1] = 0;
	put32(img + 0x1f4, 16);
	CHECK_EQ(bzimage_parse(img, sizeof(img), &info, &why), 0);
	CHECK_EQ(info.setup_bytes, 5 * 512);
	/* Exactly syssize paragraphs. */
	img[0x1f1] = 1;
	put32(img + 0x1f4, (IMAGE_BYTES - 1024) / 16);
	CHECK_EQ(bzimage_parse(img, sizeof(img), &info, &why), 0);
	CHECK_EQ(info.setup_bytes, 1024);
	CHECK_EQ(info.kernel_offset, 1024);
	CHECK_EQ(info.kernel_size, IMAGE_BYTES - 1024);
}

/* Runs bzimage_parse on img[0..size) and expects -ENOEXEC with a reason. */
static void expect_reject(int line, const uint8_t *img, size_t size, const char *what)
{
	struct bzimage_info info;
	const char *why = NULL;
	int rc = bzimage_parse(img, size, &info, &why);

	if (rc != -ENOEXEC)
		unit_fail(__FILE__, line, "%s: bzimage_parse = %d, want -ENOEXEC", what, rc);
	else if (!why || !*why)
		unit_fail(__FILE__, line, "%s: no reason given", what);
}

#define EXPECT_REJECT(img, size, what) expect_reject(__LINE__, (img), (size), (what))

static void test_parse_rejects(void)
{
	static uint8_t good[IMAGE_BYTES], img[IMAGE_BYTES];

	make_image(good);
	EXPECT_REJECT(good, 0, "empty");
	EXPECT_REJECT(good, 0x200, "too small");
	EXPECT_REJECT(good, 0x267, "too small for the header");

#define MUTATE(what, stmt)                                                                 \
	do {                                                                               \
		memcpy(img, good, sizeof(img));                                            \
		stmt;                                                                      \
		EXPECT_REJECT(img, sizeof(img), what);                                     \
	} while (0)

	MUTATE("bad boot flag", put16(img + 0x1fe, 0x55AA));
	MUTATE("no boot flag", put16(img + 0x1fe, 0));
	MUTATE("bad magic", memcpy(img + 0x202, "HdrX", 4));
	MUTATE("version 2.11", put16(img + 0x206, 0x020b));
	MUTATE("version 2.00", put16(img + 0x206, 0x0200));
	MUTATE("no XLF_KERNEL_64", put16(img + 0x236, 0x1e));
	MUTATE("no LOADED_HIGH", img[0x211] = 0x80);
	MUTATE("setup past the end", img[0x1f1] = 0xff);
	MUTATE("syssize too large", put32(img + 0x1f4, KERNEL_BYTES / 16 + 1));
	MUTATE("syssize huge", put32(img + 0x1f4, 0xffffffff));
#undef MUTATE

	/* Setup sectors ending exactly at the end of the file: no kernel at all,
	 * even when syssize claims none. */
	memcpy(img, good, sizeof(img));
	EXPECT_REJECT(img, SETUP_BYTES, "no protected-mode kernel");
	put32(img + 0x1f4, 0);
	EXPECT_REJECT(img, SETUP_BYTES, "no protected-mode kernel, syssize 0");
	/* A truncated copy of a good image. */
	EXPECT_REJECT(good, IMAGE_BYTES - 16, "truncated");
}

struct guest {
	uint8_t *ram;
	struct guest_mem mem;
};

static int guest_new(struct guest *g)
{
	g->ram = calloc(1, GUEST_RAM);
	if (!g->ram)
		return -ENOMEM;
	guest_mem_layout(&g->mem, g->ram, GUEST_RAM);
	return 0;
}

static void test_load(void)
{
	static uint8_t img[IMAGE_BYTES];
	static const char cmdline[] = "console=ttyS0 panic=1";
	const size_t initrd_size = 3 * MiB + 123;
	struct boot_entry entry = { 0, 0 };
	struct boot_params bp;
	uint64_t rd, rd_size, kernel_end = BOOT_KERNEL_GPA + INIT_SIZE;
	char err[256] = "";
	struct guest g;
	uint8_t *initrd;
	int rc;

	make_image(img);
	REQUIRE(guest_new(&g) == 0);
	initrd = malloc(initrd_size);
	REQUIRE(initrd);
	for (size_t i = 0; i < initrd_size; i++)
		initrd[i] = (uint8_t)(i ^ (i >> 8));

	rc = boot_load(&g.mem, img, sizeof(img), initrd, initrd_size, cmdline, &entry, err,
		       sizeof(err));
	CHECK_EQ(rc, 0);
	CHECK_STREQ(err, "");
	CHECK_EQ(entry.rip, 0x100200);
	CHECK_EQ(entry.rsi, BOOT_PARAMS_GPA);

	memcpy(&bp, g.ram + BOOT_PARAMS_GPA, sizeof(bp));
	CHECK_EQ(bp.hdr.type_of_loader, 0xff);
	CHECK_EQ(bp.hdr.cmd_line_ptr, BOOT_CMDLINE_GPA);
	CHECK_STREQ((const char *)g.ram + BOOT_CMDLINE_GPA, cmdline);
	CHECK_EQ(bp.hdr.code32_start, BOOT_KERNEL_GPA);
	/* The kernel's own header is copied in, up to its stated end. */
	CHECK_EQ(bp.hdr.boot_flag, 0xAA55);
	CHECK_EQ(bp.hdr.header, 0x53726448);
	CHECK_EQ(bp.hdr.version, 0x020f);
	CHECK_EQ(bp.hdr.setup_sects, SETUP_SECTS);
	CHECK_EQ(bp.hdr.init_size, INIT_SIZE);
	CHECK_EQ(bp.hdr.xloadflags, XLF_KERNEL_64);
	CHECK_EQ(bp.hdr.kernel_info_offset, 0);

	rd = bp.hdr.ramdisk_image;
	rd_size = bp.hdr.ramdisk_size;
	CHECK_EQ(rd_size, initrd_size);
	CHECK_EQ(rd % 4096, 0);
	CHECK(rd >= kernel_end);
	CHECK(rd + rd_size <= GUEST_RAM);
	if (rd >= kernel_end && rd + rd_size <= GUEST_RAM)
		CHECK(memcmp(g.ram + rd, initrd, initrd_size) == 0);

	for (size_t i = 0; i < KERNEL_BYTES; i++) {
		if (g.ram[BOOT_KERNEL_GPA + i] != kernel_byte(i)) {
			unit_fail(__FILE__, __LINE__, "kernel byte %zu not copied", i);
			break;
		}
	}
	/* The setup sectors are not part of what lands at 1 MiB. */
	CHECK_EQ(g.ram[BOOT_KERNEL_GPA + KERNEL_BYTES], 0);

	REQUIRE(bp.e820_entries == 3);
	CHECK_EQ(bp.e820_table[0].addr, 0);
	CHECK_EQ(bp.e820_table[0].size, BOOT_EBDA_GPA);
	CHECK_EQ(bp.e820_table[0].type, E820_RAM);
	CHECK_EQ(bp.e820_table[1].addr, BOOT_EBDA_GPA);
	CHECK_EQ(bp.e820_table[1].addr + bp.e820_table[1].size, 1 * MiB);
	CHECK_EQ(bp.e820_table[1].type, E820_RESERVED);
	CHECK_EQ(bp.e820_table[2].addr, 1 * MiB);
	CHECK_EQ(bp.e820_table[2].size, GUEST_RAM - 1 * MiB);
	CHECK_EQ(bp.e820_table[2].type, E820_RAM);
	/* The zero page, command line and boot tables are in usable RAM below the EBDA. */
	CHECK(BOOT_CMDLINE_GPA + sizeof(cmdline) <= BOOT_EBDA_GPA);

	free(initrd);
	free(g.ram);
}

static void test_load_no_initrd(void)
{
	static uint8_t img[IMAGE_BYTES];
	struct boot_entry entry = { 0, 0 };
	struct boot_params bp;
	char err[256] = "";
	char cmdline[CMDLINE_SIZE + 1];
	struct guest g;

	make_image(img);
	REQUIRE(guest_new(&g) == 0);
	/* The longest command line the kernel takes. */
	memset(cmdline, 'a', CMDLINE_SIZE);
	cmdline[CMDLINE_SIZE] = '\0';
	CHECK_EQ(boot_load(&g.mem, img, sizeof(img), NULL, 0, cmdline, &entry, err, sizeof(err)), 0);
	memcpy(&bp, g.ram + BOOT_PARAMS_GPA, sizeof(bp));
	CHECK_EQ(bp.hdr.ramdisk_image, 0);
	CHECK_EQ(bp.hdr.ramdisk_size, 0);
	CHECK_STREQ((const char *)g.ram + BOOT_CMDLINE_GPA, cmdline);
	free(g.ram);
}

static void test_load_initrd_addr_max(void)
{
	static uint8_t img[IMAGE_BYTES];
	static const uint8_t initrd[5000] = { 1, 2, 3 };
	struct boot_entry entry;
	struct boot_params bp;
	char err[256] = "";
	struct guest g;

	make_image(img);
	put32(img + 0x22c, 32 * MiB - 1);
	REQUIRE(guest_new(&g) == 0);
	CHECK_EQ(boot_load(&g.mem, img, sizeof(img), initrd, sizeof(initrd), "", &entry, err,
			   sizeof(err)),
		 0);
	memcpy(&bp, g.ram + BOOT_PARAMS_GPA, sizeof(bp));
	CHECK_EQ(bp.hdr.ramdisk_image % 4096, 0);
	CHECK(bp.hdr.ramdisk_image >= BOOT_KERNEL_GPA + INIT_SIZE);
	CHECK(bp.hdr.ramdisk_image + sizeof(initrd) <= 32 * MiB);
	CHECK_EQ(bp.hdr.ramdisk_size, sizeof(initrd));
	CHECK_EQ(g.ram[bp.hdr.ramdisk_image + 2], 3);
	free(g.ram);
}

/* boot_load must fail with rc and an error mentioning want. */
static void expect_load_error(int line, const uint8_t *img, size_t size, const uint8_t *initrd,
			      size_t initrd_size, const char *cmdline, int want_rc,
			      const char *want)
{
	struct boot_entry entry = { 0, 0 };
	char err[256] = "";
	struct guest g;
	int rc;

	if (guest_new(&g)) {
		unit_fail(__FILE__, line, "out of memory");
		return;
	}
	rc = boot_load(&g.mem, img, size, initrd, initrd_size, cmdline, &entry, err, sizeof(err));
	if (rc != want_rc)
		unit_fail(__FILE__, line, "boot_load = %d, want %d (err \"%s\")", rc, want_rc, err);
	if (!strstr(err, want))
		unit_fail(__FILE__, line, "error \"%s\" does not mention \"%s\"", err, want);
	if (entry.rip || entry.rsi)
		unit_fail(__FILE__, line, "entry set on failure");
	free(g.ram);
}

static void test_load_rejects(void)
{
	static uint8_t img[IMAGE_BYTES];
	const size_t big_size = GUEST_RAM - 4 * MiB;
	uint8_t *big = calloc(1, big_size);
	char longline[CMDLINE_SIZE + 2];

	REQUIRE(big);
	make_image(img);
	/* init_size needs more than the guest has above 1 MiB. */
	put32(img + 0x260, GUEST_RAM);
	expect_load_error(__LINE__, img, sizeof(img), NULL, 0, "", -ENOMEM, "does not fit");
	put32(img + 0x260, GUEST_RAM - 1 * MiB); /* exactly fits, but leaves no room for an initrd */
	expect_load_error(__LINE__, img, sizeof(img), big, 1, "", -ENOMEM, "initrd");

	/* A kernel that cannot relocate needs init_size from pref_address. */
	make_image(img);
	img[0x234] = 0;
	put32(img + 0x258, 32 * MiB);
	put32(img + 0x260, GUEST_RAM - 32 * MiB + 1);
	expect_load_error(__LINE__, img, sizeof(img), NULL, 0, "", -ENOMEM, "does not fit");
	img[0x234] = 1; /* the same kernel, relocatable, fits */
	{
		struct boot_entry entry;
		char err[256] = "";
		struct guest g;

		REQUIRE(guest_new(&g) == 0);
		CHECK_EQ(boot_load(&g.mem, img, sizeof(img), NULL, 0, "", &entry, err, sizeof(err)), 0);
		free(g.ram);
	}

	/* An initrd that fits in RAM but not above the kernel. */
	make_image(img);
	expect_load_error(__LINE__, img, sizeof(img), big, big_size, "", -ENOMEM, "initrd");
	expect_load_error(__LINE__, img, sizeof(img), big, big_size, "", -ENOMEM, "does not fit");
	/* initrd_addr_max below the kernel's end. */
	put32(img + 0x22c, 2 * MiB);
	expect_load_error(__LINE__, img, sizeof(img), big, 4096, "", -ENOMEM, "initrd");

	/* A command line one byte over cmdline_size. */
	make_image(img);
	memset(longline, 'b', CMDLINE_SIZE + 1);
	longline[CMDLINE_SIZE + 1] = '\0';
	expect_load_error(__LINE__, img, sizeof(img), NULL, 0, longline, -E2BIG, "too long");

	/* A bad image is reported as such. */
	put16(img + 0x1fe, 0);
	expect_load_error(__LINE__, img, sizeof(img), NULL, 0, "", -ENOEXEC, "kernel");
	free(big);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_parse_good);
	RUN(test_parse_rejects);
	RUN(test_load);
	RUN(test_load_no_initrd);
	RUN(test_load_initrd_addr_max);
	RUN(test_load_rejects);
	return unit_done();
}
