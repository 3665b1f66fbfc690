/* vmlinux_parse and boot_load on a synthetic ELF vmlinux: every rejection,
 * segments at their physical addresses with the bss zeroed, the entry
 * point, and a zero page that looks like a bzImage's to the kernel. */
#include <asm/bootparam.h>
#include <elf.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/mem.h"
#include "vmm/util.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/vmlinux.h"

#define GUEST_RAM  (64 * MiB)
#define TEXT_PADDR (16 * MiB)
#define TEXT_SIZE  8192
#define DATA_PADDR (TEXT_PADDR + 2 * MiB)
#define DATA_FILE  4096
#define DATA_MEM   (3 * 4096) /* two pages of bss */
#define TEXT_OFF   0x1000
#define DATA_OFF   (TEXT_OFF + TEXT_SIZE)
#define IMAGE_SIZE (DATA_OFF + DATA_FILE)
#define PHNUM      3 /* text, a note, data */

static uint8_t image_byte(size_t i)
{
	return (uint8_t)(i * 13 + 5);
}

static Elf64_Phdr *phdr(uint8_t *img, unsigned i)
{
	return (Elf64_Phdr *)(img + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr));
}

/* A minimal vmlinux: two load segments and a note between them. */
static void make_image(uint8_t *img)
{
	Elf64_Ehdr *eh = (Elf64_Ehdr *)img;

	memset(img, 0, IMAGE_SIZE);
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = TEXT_PADDR + 0x40;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = PHNUM;
	*phdr(img, 0) = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = TEXT_OFF,
				      .p_vaddr = 0xffffffff81000000ULL, .p_paddr = TEXT_PADDR,
				      .p_filesz = TEXT_SIZE, .p_memsz = TEXT_SIZE };
	*phdr(img, 1) = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = TEXT_OFF, .p_filesz = 16 };
	*phdr(img, 2) = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = DATA_OFF,
				      .p_vaddr = 0xffffffff81200000ULL, .p_paddr = DATA_PADDR,
				      .p_filesz = DATA_FILE, .p_memsz = DATA_MEM };
	for (size_t i = TEXT_OFF; i < IMAGE_SIZE; i++)
		img[i] = image_byte(i);
}

static void test_parse_good(void)
{
	static uint8_t img[IMAGE_SIZE];
	struct vmlinux_info info;
	const char *why = NULL;

	make_image(img);
	CHECK(vmlinux_is_elf(img, sizeof(img)));
	CHECK_EQ(vmlinux_parse(img, sizeof(img), 1 * MiB, &info, &why), 0);
	CHECK_EQ(info.entry, TEXT_PADDR + 0x40);
	CHECK_EQ(info.nsegs, 2);
	CHECK_EQ(info.low, TEXT_PADDR);
	CHECK_EQ(info.end, DATA_PADDR + DATA_MEM);
	CHECK_EQ(info.segs[1].offset, DATA_OFF);
	CHECK_EQ(info.segs[1].filesz, DATA_FILE);
	CHECK_EQ(info.segs[1].memsz, DATA_MEM);
	/* A bzImage starts with neither. */
	CHECK(!vmlinux_is_elf((const uint8_t *)"MZ\0\0", 4));
	CHECK(!vmlinux_is_elf(img, 3));
}

static void expect_reject(int line, const uint8_t *img, size_t size, const char *what)
{
	struct vmlinux_info info;
	const char *why = NULL;
	int rc = vmlinux_parse(img, size, 1 * MiB, &info, &why);

	if (rc != -ENOEXEC)
		unit_fail(__FILE__, line, "%s: vmlinux_parse = %d, want -ENOEXEC", what, rc);
	else if (!why || !*why)
		unit_fail(__FILE__, line, "%s: no reason given", what);
}

#define EXPECT_REJECT(img, size, what) expect_reject(__LINE__, (img), (size), (what))

static void test_parse_rejects(void)
{
	static uint8_t good[IMAGE_SIZE], img[IMAGE_SIZE];
	Elf64_Ehdr *eh = (Elf64_Ehdr *)img;

	make_image(good);
	EXPECT_REJECT(good, 0, "empty");
	EXPECT_REJECT(good, sizeof(Elf64_Ehdr) - 1, "shorter than the ELF header");
	EXPECT_REJECT(good, sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr), "program headers cut off");
	EXPECT_REJECT(good, IMAGE_SIZE - 1, "last segment cut off");

#define MUTATE(what, stmt)                                                                 \
	do {                                                                               \
		memcpy(img, good, sizeof(img));                                            \
		stmt;                                                                      \
		EXPECT_REJECT(img, sizeof(img), what);                                     \
	} while (0)

	MUTATE("bad magic", img[1] = 'F');
	MUTATE("32-bit", eh->e_ident[EI_CLASS] = ELFCLASS32);
	MUTATE("big-endian", eh->e_ident[EI_DATA] = ELFDATA2MSB);
	MUTATE("not x86-64", eh->e_machine = EM_AARCH64);
	MUTATE("shared object", eh->e_type = ET_DYN);
	MUTATE("relocatable object", eh->e_type = ET_REL);
	MUTATE("odd phentsize", eh->e_phentsize = sizeof(Elf64_Phdr) - 8);
	MUTATE("no program headers", eh->e_phnum = 0);
	MUTATE("phoff past the end", eh->e_phoff = IMAGE_SIZE);
	MUTATE("phoff overflows", eh->e_phoff = UINT64_MAX - 8);
	MUTATE("too many headers for the file", eh->e_phnum = 0xffff);
	MUTATE("no load segments", phdr(img, 0)->p_type = PT_NULL; phdr(img, 2)->p_type = PT_NULL);
	MUTATE("filesz > memsz", phdr(img, 2)->p_memsz = DATA_FILE - 1);
	MUTATE("segment past the end", phdr(img, 2)->p_offset = IMAGE_SIZE - 100);
	MUTATE("segment offset overflows", phdr(img, 2)->p_offset = UINT64_MAX - 100);
	MUTATE("paddr + memsz overflows",
	       phdr(img, 2)->p_paddr = UINT64_MAX - 100; phdr(img, 2)->p_memsz = 4096 * 4);
	MUTATE("loads below 1 MiB", phdr(img, 0)->p_paddr = 0x7000);
	MUTATE("entry outside", eh->e_entry = DATA_PADDR + DATA_MEM);
	MUTATE("entry in bss only", eh->e_entry = DATA_PADDR + DATA_FILE);
#undef MUTATE
}

static void test_load(void)
{
	static uint8_t img[IMAGE_SIZE];
	static const uint8_t initrd[10000] = { 7, 8, 9 };
	static const char cmdline[] = "console=ttyS0 root=/dev/vda";
	struct boot_entry entry = { 0, 0 };
	struct boot_params bp;
	char err[256] = "";
	uint8_t *ram = calloc(1, GUEST_RAM);
	struct guest_mem mem;

	REQUIRE(ram);
	guest_mem_layout(&mem, ram, GUEST_RAM);
	/* Stale bytes where the bss goes must be cleared. */
	memset(ram + DATA_PADDR + DATA_FILE, 0xee, DATA_MEM - DATA_FILE);
	make_image(img);
	CHECK_EQ(boot_load(&mem, img, sizeof(img), initrd, sizeof(initrd), cmdline, &entry, err,
			   sizeof(err)),
		 0);
	CHECK_STREQ(err, "");
	CHECK_EQ(entry.rip, TEXT_PADDR + 0x40);
	CHECK_EQ(entry.rsi, BOOT_PARAMS_GPA);
	CHECK(memcmp(ram + TEXT_PADDR, img + TEXT_OFF, TEXT_SIZE) == 0);
	CHECK(memcmp(ram + DATA_PADDR, img + DATA_OFF, DATA_FILE) == 0);
	for (size_t i = DATA_FILE; i < DATA_MEM; i++)
		if (ram[DATA_PADDR + i]) {
			unit_fail(__FILE__, __LINE__, "bss byte %zu not zero", i);
			break;
		}
	memcpy(&bp, ram + BOOT_PARAMS_GPA, sizeof(bp));
	CHECK_EQ(bp.hdr.boot_flag, 0xAA55);
	CHECK_EQ(bp.hdr.header, 0x53726448);
	CHECK_EQ(bp.hdr.type_of_loader, 0xff);
	CHECK_EQ(bp.hdr.cmd_line_ptr, BOOT_CMDLINE_GPA);
	CHECK_STREQ((const char *)ram + BOOT_CMDLINE_GPA, cmdline);
	CHECK_EQ(bp.hdr.ramdisk_size, sizeof(initrd));
	CHECK(bp.hdr.ramdisk_image >= DATA_PADDR + DATA_MEM);
	CHECK_EQ(bp.hdr.ramdisk_image % 4096, 0);
	CHECK_EQ(ram[bp.hdr.ramdisk_image + 2], 9);
	CHECK_EQ(bp.e820_entries, 3);
	free(ram);
}

static void test_load_rejects(void)
{
	static uint8_t img[IMAGE_SIZE];
	struct boot_entry entry = { 0, 0 };
	char err[256] = "";
	uint8_t *ram = calloc(1, GUEST_RAM);
	struct guest_mem mem;

	REQUIRE(ram);
	guest_mem_layout(&mem, ram, GUEST_RAM);
	/* The bss reaches past the end of guest memory. */
	make_image(img);
	phdr(img, 2)->p_memsz = GUEST_RAM;
	CHECK_EQ(boot_load(&mem, img, sizeof(img), NULL, 0, "", &entry, err, sizeof(err)),
		 -ENOMEM);
	CHECK(strstr(err, "does not fit") != NULL);
	/* A broken ELF is reported as a kernel error, and nothing is entered. */
	make_image(img);
	((Elf64_Ehdr *)img)->e_machine = EM_386;
	CHECK_EQ(boot_load(&mem, img, sizeof(img), NULL, 0, "", &entry, err, sizeof(err)),
		 -ENOEXEC);
	CHECK(strstr(err, "kernel: ") == err);
	CHECK_EQ(entry.rip, 0);
	free(ram);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_parse_good);
	RUN(test_parse_rejects);
	RUN(test_load);
	RUN(test_load_rejects);
	return unit_done();
}
