/* libFuzzer target for kernel images (vmm/x86/boot.c, vmm/x86/vmlinux.c):
 * whatever file --kernel names goes through boot_load, which picks the
 * bzImage or the ELF vmlinux parser. The guest is 64 MiB, enough for the
 * synthetic images of the seed corpus to load. Invariants, checked with
 * __builtin_trap():
 *   - an error has a message and leaves the entry point unset;
 *   - a success enters inside guest memory with RSI at the zero page;
 *   - the input is copied into a buffer of exactly its size, so any read
 *     past its end is an ASan report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/mem.h"
#include "vmm/x86/boot.h"
#include "tests/fuzz/fuzz.h"

#define GUEST_RAM (64ULL << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *ram;
	static struct guest_mem mem;
	static const uint8_t initrd[4096] = { 1 };
	struct boot_entry entry = { 0, 0 };
	char err[256] = "";
	uint8_t *copy;
	int rc;

	if (!ram) {
		ram = calloc(1, GUEST_RAM);
		if (!ram)
			abort();
		guest_mem_layout(&mem, ram, GUEST_RAM);
	}
	copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	rc = boot_load(&mem, copy, size, size & 1 ? initrd : NULL, sizeof(initrd), "console=ttyS0",
		       &entry, err, sizeof(err));
	if (rc) {
		if (rc > 0 || !err[0] || entry.rip || entry.rsi)
			__builtin_trap();
	} else if (entry.rip >= GUEST_RAM || entry.rsi != BOOT_PARAMS_GPA) {
		__builtin_trap();
	}
	free(copy);
	return 0;
}
