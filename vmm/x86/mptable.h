/* Intel MultiProcessor Specification 1.4 table: tells the guest how many
 * CPUs there are, where the IOAPIC is and how ISA interrupts reach it. */
#ifndef VMM_X86_MPTABLE_H
#define VMM_X86_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

#define MPTABLE_IOAPIC_ADDR 0xfec00000u
#define MPTABLE_LAPIC_ADDR  0xfee00000u
#define MPTABLE_IOAPIC_PINS 24

/* Size of the table for ncpus CPUs. */
size_t mptable_size(unsigned ncpus);
/* Writes the floating pointer and the configuration table into buf, which
 * the guest will see at gpa. Returns the bytes written, -EINVAL for a CPU
 * count the table cannot express, or -ENOSPC if buf is too small. */
int mptable_write(uint8_t *buf, size_t bufsize, uint32_t gpa, unsigned ncpus);

#endif
