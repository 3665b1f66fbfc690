/* The few legacy PC ports a microVM guest touches: the i8042 reset line
 * (reboot=k), a CMOS stub, the ACPI PM1 and reset
 * registers, and the two test ports (debug-exit and boot marker) that tests
 * and benchmarks rely on. */
#ifndef VMM_X86_LEGACY_H
#define VMM_X86_LEGACY_H

struct vm;

/* A byte B written to this port ends vmm with exit status B (unlike QEMU's
 * isa-debug-exit, which exits with B*2+1). */
#define DEBUG_EXIT_PORT  0x501
/* The first write to this port records the time since vmm started. */
#define BOOT_MARKER_PORT 0x502

#include <stdint.h>

struct legacy_devices {
	struct vm *vm;
	uint16_t pm1_sts; /* ACPI PM1a status, enable and control */
	uint16_t pm1_en;
	uint16_t pm1_cnt;
};

/* Registers the ports; state lives in vm->legacy. 0 or -errno. */
int legacy_register(struct vm *vm);

#endif
